/**
 * Dom0Network's netplan check against the real `netplan` (Debian's netplan.io): the rendered file passes, and a file
 * netplan refuses is refused before it replaces the old one. The check runs as writeRemoteFile runs it (the temp
 * file as `$1`), in a private mount namespace whose /etc/netplan is this test's directory, so this machine's own
 * /etc/netplan is never read or written.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { checkInputs, type Dom0NetworkInputs } from "../../provider";
import { netplanValidate } from "../../provider/resources/dom0-network/plan";
import { KIND_INPUTS } from "../support/kind-inputs";
import { inMountNamespace } from "../support/sshd";

const FILE = "/etc/netplan/50-xe.yaml";
const missing =
  spawnSync("sh", ["-c", "command -v netplan"]).status !== 0 ? "netplan is not installed" : false;

describe("the netplan check of a new Dom0Network file", { skip: missing }, () => {
  let dir: string;
  let etcNetplan: string;
  let rendered: string;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-netplan-"));
    etcNetplan = path.join(dir, "etc-netplan");
    fs.mkdirSync(etcNetplan, { mode: 0o755 });
    const variant = KIND_INPUTS.Dom0Network!.variants.find((v) => v.variant === "ubuntu-dhcp")!;
    const { inputs, failures } = checkInputs("Dom0Network", variant.inputs);
    assert.deepEqual(failures, []);
    rendered = (inputs as unknown as Dom0NetworkInputs).files[FILE]!;
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs the check on `content` as the new FILE, with `others` already in /etc/netplan; its exit code and output. */
  function check(content: string, others: Record<string, string> = {}): { code: number; out: string } {
    for (const f of fs.readdirSync(etcNetplan)) fs.rmSync(path.join(etcNetplan, f));
    for (const [name, text] of Object.entries(others))
      fs.writeFileSync(path.join(etcNetplan, name), text, { mode: 0o600 });
    // The temp file sits beside the old one, as writeRemoteFile writes it.
    const tmp = path.join(etcNetplan, `.50-xe.yaml.xen-estate.${process.pid}`);
    fs.writeFileSync(tmp, content, { mode: 0o600 });
    const validate = netplanValidate(FILE).split("%s").join('"$1"');
    const [unshare, ...wrap] = inMountNamespace([`mount --bind ${etcNetplan} /etc/netplan`]);
    const r = spawnSync(
      unshare!,
      [...wrap, "bash", "-c", validate, "xe-validate", `/etc/netplan/${path.basename(tmp)}`],
      { encoding: "utf8" },
    );
    fs.rmSync(tmp);
    return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
  }

  test("the rendered bridge passes, beside the files already there", () => {
    const r = check(rendered, { "00-installer.yaml": "network:\n  version: 2\n" });
    assert.equal(r.code, 0, r.out);
  });

  test("a file netplan cannot read is refused, naming what is wrong", () => {
    const broken = rendered.replace("bridges:", "bridges: [");
    const r = check(broken);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /50-xe\.yaml/);
  });

  test("a file whose keys netplan does not know is refused", () => {
    const r = check(rendered.replace("forward-delay: 0", "forward-delay: 0\n        not-a-netplan-key: 1"));
    assert.notEqual(r.code, 0);
    assert.match(r.out, /not-a-netplan-key/);
  });

  test("the check leaves nothing behind in /etc/netplan", () => {
    check(rendered);
    assert.deepEqual(fs.readdirSync(etcNetplan), []);
  });
});
