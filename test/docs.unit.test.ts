/**
 * The docs stay true to the code: every argument of every resource, of the connection and of each component is on
 * its page under docs/resources/, and every page the docs link to exists.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoPath, repoRoot } from "./support/repo";

/** The fields of an exported interface, as `readonly name?:` lines. */
function fields(file: string, iface: string): string[] {
  const text = fs.readFileSync(repoPath(file), "utf8");
  const start = text.indexOf(`export interface ${iface}`);
  assert.ok(start >= 0, `${file} declares ${iface}`);
  const open = text.indexOf("{", start);
  let depth = 0;
  let end = open;
  for (; end < text.length; end++) {
    if (text[end] === "{") depth++;
    else if (text[end] === "}" && --depth === 0) break;
  }
  const body = text.slice(open + 1, end);
  // Only the interface's own fields: lines indented by two spaces.
  return [...body.matchAll(/^ {2}readonly (\w+)\??:/gm)].map((m) => m[1]!);
}

/** Which page documents which interface. A resource folder without an entry documents itself in <folder>.md. */
const PAGES: [page: string, file: string, iface: string][] = [
  ["connection.md", "provider/ssh/connection.ts", "ConnectionArgs"],
  ["guests.md", "provider/guest/args.ts", "GuestArgsBase"],
  ["guests.md", "provider/guest/args.ts", "GuestInstallArgs"],
  ["guests.md", "provider/guest/args.ts", "DebootstrapArgs"],
  ["guests.md", "provider/resources/bridged-domu/index.ts", "BridgedDomUArgs"],
  ["guests.md", "provider/resources/nat-domu/index.ts", "NatDomUArgs"],
  ["xen-guest.md", "components/xen-guest.ts", "XenGuestArgs"],
  ["migrated-guest.md", "components/migrated-guest.ts", "MigratedGuestArgs"],
  ["dom0-host.md", "components/dom0-host.ts", "Dom0HostArgs"],
  ["dom0-host.md", "provider/resources/dom0-access/index.ts", "Dom0AccessArgs"],
  ["dom0-host.md", "provider/resources/dom0-packages/index.ts", "Dom0PackagesArgs"],
  ["dom0-host.md", "provider/resources/dom0-firewall/index.ts", "Dom0FirewallArgs"],
  ["dom0-host.md", "provider/resources/dom0-xen-boot/index.ts", "Dom0XenBootArgs"],
  ["dom0-host.md", "provider/resources/dom0-network/index.ts", "Dom0NetworkArgs"],
  ["dom0-host.md", "provider/resources/dom0-monitoring/index.ts", "Dom0MonitoringArgs"],
  ["dom0-host.md", "provider/resources/dom0-reboot/index.ts", "Dom0RebootArgs"],
  ["dom0-host.md", "provider/resources/hetzner-installimage/index.ts", "HetznerInstallimageArgs"],
];
const FOLDER_PAGES: Record<string, string> = { "bridged-domu": "guests.md", "nat-domu": "guests.md" };
// Dom0Host's concerns share its page (their Args are listed in PAGES).
for (const k of [
  "dom0-access",
  "dom0-packages",
  "dom0-firewall",
  "dom0-xen-boot",
  "dom0-network",
  "dom0-monitoring",
  "dom0-reboot",
  "hetzner-installimage",
])
  FOLDER_PAGES[k] = "dom0-host.md";

describe("the resource docs", () => {
  const resources = fs.readdirSync(repoPath("provider", "resources"));
  const pages: [string, string, string][] = [...PAGES];
  for (const r of resources) {
    if (FOLDER_PAGES[r]) continue;
    const index = fs.readFileSync(repoPath("provider", "resources", r, "index.ts"), "utf8");
    for (const m of index.matchAll(/export interface (\w+Args)\b/g))
      pages.push([`${r}.md`, `provider/resources/${r}/index.ts`, m[1]!]);
  }

  for (const [page, file, iface] of pages)
    test(`docs/resources/${page} names every field of ${iface}`, () => {
      const doc = repoPath("docs", "resources", page);
      assert.ok(fs.existsSync(doc), `missing ${path.relative(repoRoot(), doc)}`);
      const text = fs.readFileSync(doc, "utf8");
      const missing = fields(file, iface).filter((f) => !text.includes(`\`${f}\``));
      assert.deepEqual(missing, [], `${page} does not mention ${missing.join(", ")}`);
    });

  test("every relative link in README.md and docs/ points at a file that exists", () => {
    const files = [
      "README.md",
      ...(fs.readdirSync(repoPath("docs"), { recursive: true }) as string[])
        .filter((f) => f.endsWith(".md"))
        .map((f) => path.join("docs", f)),
    ];
    const broken: string[] = [];
    for (const f of files) {
      const text = fs.readFileSync(repoPath(f), "utf8");
      for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue;
        if (!fs.existsSync(path.join(repoRoot(), path.dirname(f), target))) broken.push(`${f} → ${target}`);
      }
    }
    assert.deepEqual(broken, []);
  });
});
