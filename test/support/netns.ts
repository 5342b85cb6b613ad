/** Test hosts in network namespaces: the commands that make one, joined to this machine by a veth pair. */

export interface VethNamespace {
  /** The namespace's name. */
  ns: string;
  /** The veth end on this machine. */
  hostIf: string;
  /** Addresses of this machine's end, with their prefix (`10.0.0.1/24`); the first is the one connections leave from. */
  hostAddresses: readonly string[];
  /** The namespace's own address, with its prefix. */
  inside: string;
  /** The veth end's name inside the namespace. @default "eth0" */
  peer?: string;
}

/**
 * Commands (for `bash -c …`, joined with `&&`) that make the namespace with its veth pair, both ends addressed and
 * up, and its loopback up. Run {@link removeVethNamespace} first when a run before may have left it.
 */
export function makeVethNamespace(v: VethNamespace): string[] {
  const peer = v.peer ?? "eth0";
  return [
    `ip netns add ${v.ns}`,
    `ip link add ${v.hostIf} type veth peer name ${peer} netns ${v.ns}`,
    ...v.hostAddresses.map((a) => `ip addr add ${a} dev ${v.hostIf}`),
    `ip link set ${v.hostIf} up`,
    `ip -n ${v.ns} addr add ${v.inside} dev ${peer}`,
    `ip -n ${v.ns} link set ${peer} up`,
    `ip -n ${v.ns} link set lo up`,
  ];
}

/** The command that removes the namespace and this machine's veth end, whether they exist or not. */
export function removeVethNamespace(v: Pick<VethNamespace, "ns" | "hostIf">): string {
  return `ip netns del ${v.ns} 2>/dev/null; ip link del ${v.hostIf} 2>/dev/null; true`;
}
