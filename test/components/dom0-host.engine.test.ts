/**
 * Dom0Host through the real Pulumi engine, offline: `preview` plans every concern as its own resource without
 * touching the host, and bad input fails `preview` with the property named.
 */
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { createStack, resourceChanges, type PulumiStack } from "../engine/harness";
import { fixtureKeys } from "../support/fixture-keys";
import { repoPath, repoRoot } from "../support/repo";

const T = "pulumi-nodejs:dynamic/xen-estate:";
const clientPub = fs.readFileSync(repoPath("test", "fixtures", "keys", "client_ed25519.pub"), "utf8").trim();

function config(over: Record<string, string> = {}): Record<string, { value: string; secret?: boolean }> {
  const base: Record<string, { value: string; secret?: boolean }> = {
    // Nothing listens there: preview must not try.
    host: { value: "203.0.113.5" },
    port: { value: "22" },
    hostKey: { value: fixtureKeys.hostFingerprint },
    privateKey: { value: fixtureKeys.clientPrivateKey, secret: true },
    adminKey: { value: clientPub },
    trustedSources: { value: JSON.stringify(["198.51.100.7"]) },
    smtpHost: { value: "mail.example.org" },
  };
  for (const [k, v] of Object.entries(over)) base[k] = { value: v };
  return base;
}

describe("Dom0Host in preview", { timeout: 10 * 60_000 }, () => {
  const stacks: PulumiStack[] = [];
  after(async () => {
    for (const s of stacks) await s.remove();
  });
  async function stack(over: Record<string, string> = {}): Promise<PulumiStack> {
    const s = await createStack({
      programDir: path.join(repoRoot(), "test", "engine", "fixtures", "dom0-host"),
      linkPackage: true,
      config: config(over),
    });
    stacks.push(s);
    return s;
  }

  test("plans one resource per concern, offline", async () => {
    const s = await stack();
    const p = await s.preview();
    const planned = resourceChanges(p)
      .map((x) => `${x.type.startsWith(T) ? x.type.slice(T.length) : x.type} ${x.op}`)
      .sort();
    assert.deepEqual(planned, [
      "Dom0Access create",
      "Dom0Firewall create",
      "Dom0Monitoring create",
      "Dom0Network create",
      "Dom0Packages create",
      "Dom0Reboot create",
      "Dom0XenBoot create",
      "xen-estate:components:Dom0Host create",
    ]);
  });

  test("admin keys without the key the provider logs in with fail preview, naming the property", async () => {
    const s = await stack({ adminKey: fixtureKeys.hostPublicKey });
    const p = await s.preview({ expectFailure: true });
    assert.notEqual(p.code, 0);
    assert.match(
      p.stdout + p.stderr,
      /`authorizedKeys` must include the public key of the connection's privateKey/,
    );
  });

  test("a trusted source that is no address fails preview, naming the property and the value", async () => {
    const s = await stack({ trustedSources: JSON.stringify(["198.51.100.7", "office-vpn"]) });
    const p = await s.preview({ expectFailure: true });
    assert.notEqual(p.code, 0);
    assert.match(
      p.stdout + p.stderr,
      /`trustedSources\[1\]` must be an IPv4 or IPv6 address or network[^\n]*office-vpn/,
    );
  });
});
