/**
 * What differs between the systems a dom0 runs: Debian 12 (ifupdown, sshd as a plain service) and Ubuntu 24.04
 * (netplan, sshd started through `ssh.socket`). Each fact is declared once, here.
 */

export type Distribution = "debian" | "ubuntu";

export interface OsFacts {
  distribution: Distribution;
  /** Release code name. */
  release: string;
  /** Mirror used when none is given. */
  defaultMirror: string;
  /** Where the security updates come from when no mirror for them is given. */
  defaultSecurityMirror: string;
  /** Archive components. */
  components: string[];
  /** How the network is configured. */
  network: "ifupdown" | "netplan";
  /** sshd is socket-activated: a port change needs the socket restarted after `daemon-reload`. */
  sshSocketActivated: boolean;
  /** Xen's packages. */
  xenPackages: string[];
}

export const OS_FACTS: Readonly<Record<string, OsFacts>> = {
  "debian-bookworm": {
    distribution: "debian",
    release: "bookworm",
    defaultMirror: "http://deb.debian.org/debian",
    defaultSecurityMirror: "http://deb.debian.org/debian-security",
    components: ["main", "contrib", "non-free-firmware"],
    network: "ifupdown",
    sshSocketActivated: false,
    xenPackages: ["xen-system-amd64", "xen-utils-common"],
  },
  "ubuntu-noble": {
    distribution: "ubuntu",
    release: "noble",
    defaultMirror: "http://archive.ubuntu.com/ubuntu",
    defaultSecurityMirror: "http://security.ubuntu.com/ubuntu",
    components: ["main", "restricted", "universe"],
    network: "netplan",
    sshSocketActivated: true,
    xenPackages: ["xen-system-amd64", "xen-utils-common"],
  },
};

/** The systems supported, as `distribution-release`. */
export const SUPPORTED_OS = Object.keys(OS_FACTS);

export function osFacts(distribution: string, release: string): OsFacts | undefined {
  return OS_FACTS[`${distribution}-${release}`];
}

/** The default release of each distribution. */
export const DEFAULT_RELEASE: Readonly<Record<Distribution, string>> = {
  debian: "bookworm",
  ubuntu: "noble",
};
