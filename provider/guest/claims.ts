/**
 * Program-side refusal of an address or disk used twice: a MAC, an IP or a disk that another guest of the same
 * program already claims on the same host fails the program (so `pulumi preview` fails) before anything changes.
 * The remote check in the lifecycle covers guests of other programs.
 */
import * as pulumi from "@pulumi/pulumi";

export type ClaimKind = "MAC" | "IP" | "disk";

const claimed = new Map<string, string>();

/** Claims `addresses` on `host` for `resourceName`; throws naming the other guest when one is taken. */
export function claimAddresses(
  resourceName: string,
  host: string,
  addresses: { kind: ClaimKind; value: string }[],
): void {
  for (const a of addresses) {
    const key = `${host}\0${a.kind}\0${a.value.toLowerCase()}`;
    const other = claimed.get(key);
    if (other && other !== resourceName)
      throw new Error(
        `${resourceName}: ${a.kind} ${a.value} on ${host} is already used by ${other} in this program; every guest on a host needs its own`,
      );
    claimed.set(key, resourceName);
  }
}

/** The claims of one guest resource, made once its values are known. */
export function claimOnConstruction(
  resourceName: string,
  args: { connection: unknown; ip?: unknown; mac?: unknown; disks?: unknown },
): void {
  pulumi
    .all([
      pulumi.output(args.connection as pulumi.Input<{ host: string }>),
      pulumi.output(args.ip),
      pulumi.output(args.mac),
      pulumi.output(args.disks as pulumi.Input<{ path?: unknown }[]>),
    ])
    .apply(([conn, ip, mac, disks]) => {
      const addresses: { kind: ClaimKind; value: string }[] = [];
      if (typeof mac === "string") addresses.push({ kind: "MAC", value: mac });
      if (typeof ip === "string") addresses.push({ kind: "IP", value: ip });
      for (const d of Array.isArray(disks) ? disks : [])
        if (d && typeof d.path === "string") addresses.push({ kind: "disk", value: d.path });
      if (conn && typeof conn.host === "string") claimAddresses(resourceName, conn.host, addresses);
    });
}

/**
 * The owner tag of a guest, `<project>/<stack>/<resource>`, with every character outside `[A-Za-z0-9._/:-]`
 * replaced by `_` (it is written into a config comment).
 */
export function ownerOf(resourceName: string): string {
  return `${pulumi.getProject()}/${pulumi.getStack()}/${resourceName}`.replace(/[^A-Za-z0-9._/:-]/g, "_");
}
