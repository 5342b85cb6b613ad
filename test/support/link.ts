/**
 * A network namespace behind a veth pair whose two directions are shaped to a rate with `tc … tbf` (this kernel
 * has no netem): a "remote host" on a link of known speed, for transfer tests and benchmarks. The namespace side
 * runs whatever is started in it (an sshd: `startSshd({ netns })`).
 *
 *   const link = new ShapedLink("xelm1", "10.231.1", "200mbit"); await link.up();
 *   link.nsAddress (10.231.1.2), link.hostAddress (10.231.1.1); await link.cut(); await link.restore();
 */
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

export class ShapedLink {
  readonly hostIf: string;
  readonly nsIf: string;
  readonly hostAddress: string;
  readonly nsAddress: string;

  /** `name` names the namespace and (with `h`/`n`) the veth ends, at most 13 characters; `net` is a /24's first 3 octets. */
  constructor(
    readonly name: string,
    net: string,
    readonly rate: string,
  ) {
    if (name.length > 13) throw new Error(`ShapedLink name ${name} is longer than 13 characters`);
    this.hostIf = `${name}h`;
    this.nsIf = `${name}n`;
    this.hostAddress = `${net}.1`;
    this.nsAddress = `${net}.2`;
  }

  get netns(): string {
    return this.name;
  }

  /** The tbf qdisc for this rate: a burst of about 2 ms of traffic (at least 64 KiB, one GSO packet). */
  private tbf(dev: string, ns?: string): string[] {
    const bits = parseRate(this.rate);
    const burst = Math.max(64 * 1024, Math.round(bits / 8 / 500));
    return [
      ...(ns ? ["ip", "netns", "exec", ns] : []),
      "tc",
      "qdisc",
      "replace",
      "dev",
      dev,
      "root",
      "tbf",
      "rate",
      this.rate,
      "burst",
      String(burst),
      "latency",
      "50ms",
    ];
  }

  async up(): Promise<void> {
    await this.down();
    const steps: string[][] = [
      ["ip", "netns", "add", this.name],
      ["ip", "link", "add", this.hostIf, "type", "veth", "peer", "name", this.nsIf, "netns", this.name],
      ["ip", "addr", "add", `${this.hostAddress}/24`, "dev", this.hostIf],
      ["ip", "link", "set", this.hostIf, "up"],
      ["ip", "-n", this.name, "addr", "add", `${this.nsAddress}/24`, "dev", this.nsIf],
      ["ip", "-n", this.name, "link", "set", this.nsIf, "up"],
      ["ip", "-n", this.name, "link", "set", "lo", "up"],
      this.tbf(this.hostIf),
      this.tbf(this.nsIf, this.name),
    ];
    for (const s of steps) await run(s[0]!, s.slice(1));
  }

  /** Cuts the link (both ends down): connections over it stall until their keepalives give up. */
  async cut(): Promise<void> {
    await run("ip", ["link", "set", this.hostIf, "down"]);
  }

  async restore(): Promise<void> {
    await run("ip", ["link", "set", this.hostIf, "up"]);
  }

  async down(): Promise<void> {
    await run("bash", [
      "-c",
      `ip link del ${this.hostIf} 2>/dev/null; ip netns del ${this.name} 2>/dev/null; true`,
    ]);
  }
}

/** `1gbit`, `200mbit`, `500kbit` → bits per second. */
export function parseRate(rate: string): number {
  const m = /^(\d+(?:\.\d+)?)(k|m|g)?bit$/i.exec(rate);
  if (!m) throw new Error(`not a tc rate: ${rate}`);
  const f = { k: 1e3, m: 1e6, g: 1e9 }[(m[2] ?? "").toLowerCase() as "k" | "m" | "g"] ?? 1;
  return Number(m[1]) * f;
}
