/**
 * Dom0Access' sshd drop-in against the real sshd binary: it validates (`sshd -t`), and the effective settings are
 * the hardened ones even when the distribution's own file, read after it, says otherwise.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { renderSshdDropIn } from "../../provider";

describe("the sshd drop-in", () => {
  test("validates with sshd -t and wins over later files: port, no root, no passwords, no X11", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-sshd-dropin-"));
    try {
      execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", path.join(dir, "hostkey")]);
      fs.writeFileSync(
        path.join(dir, "00-xen-estate.conf"),
        renderSshdDropIn({ adminUser: "ops", authorizedKeys: [], sshPort: 2222 }),
      );
      // What a distribution ships after the drop-in's Include: the opposite settings.
      fs.writeFileSync(
        path.join(dir, "sshd_config"),
        `Include ${dir}/*.conf\nHostKey ${dir}/hostkey\nPermitRootLogin yes\nPasswordAuthentication yes\nX11Forwarding yes\n`,
      );
      fs.mkdirSync("/run/sshd", { recursive: true });
      execFileSync("/usr/sbin/sshd", ["-t", "-f", path.join(dir, "sshd_config")]);
      const eff = execFileSync(
        "/usr/sbin/sshd",
        ["-T", "-f", path.join(dir, "sshd_config"), "-C", "user=root,host=x,addr=198.51.100.7"],
        { encoding: "utf8" },
      );
      for (const line of [
        "port 2222",
        "permitrootlogin no",
        "passwordauthentication no",
        "kbdinteractiveauthentication no",
        "x11forwarding no",
      ])
        assert.ok(eff.split("\n").includes(line), `${line} in:\n${eff}`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
