/**
 * Guests on one host start one at a time: `xl create` runs holding the host's start lock, so ten guests created
 * at once never queue ten hotplug scripts behind libxl's deadline. Run by a real sshd and real flock, with `xl`
 * simulated by a script that logs when it starts and ends and whether it inherited the lock's descriptor (the
 * lab's load test, test/lab/load.lab.test.ts, starts ten real guests at once).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { RemoteHost, SshPool } from "../../provider";
import { createDomainScript } from "../../provider/guest/domain";
import { startLocalHost, type Sshd } from "../support/sshd";
import { withStubs } from "../support/stub-commands";

let sshd: Sshd;
let pool: SshPool;
let host: RemoteHost;
let dir: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-domain-ssh-"));
  ({ sshd, pool, host } = await startLocalHost(dir));
});

after(async () => {
  await pool.close();
  await sshd.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("starting guests", () => {
  test("xl create runs one at a time on a host, and xl's lingering process does not keep the lock", async () => {
    const stubs = path.join(dir, "stubs");
    const log = path.join(dir, "xl.log");
    fs.mkdirSync(stubs);
    // Logs "start <config> <fd 7 open?>", sleeps, logs "end <config>"; leaves a child behind that keeps whatever
    // descriptors it inherited (as xl's domain watcher does), so an inherited lock would block the next start.
    fs.writeFileSync(
      path.join(stubs, "xl"),
      [
        "#!/bin/bash",
        `if [ -e /proc/$$/fd/7 ]; then fd=inherited; else fd=closed; fi`,
        `echo "start $3 $fd" >> ${JSON.stringify(log)}`,
        "sleep 0.3",
        `echo "end $3" >> ${JSON.stringify(log)}`,
        "(sleep 30 &) >/dev/null 2>&1",
        "",
      ].join("\n"),
      { mode: 0o755 },
    );
    const stubbed = withStubs(host, stubs);
    const names = ["web1", "web2", "web3", "web4"];
    await Promise.all(names.map((n) => stubbed.script(createDomainScript(n), { timeoutMs: 60_000 })));
    const lines = fs.readFileSync(log, "utf8").trim().split("\n");
    assert.equal(lines.length, 2 * names.length, lines.join("\n"));
    for (let i = 0; i < lines.length; i += 2) {
      const start = /^start (\S+) (\S+)$/.exec(lines[i] ?? "");
      assert.ok(start, `line ${i + 1} starts a guest: ${lines[i]}`);
      assert.equal(
        lines[i + 1],
        `end ${start[1]}`,
        `a start ran while ${start[1]} was starting:\n${lines.join("\n")}`,
      );
      assert.equal(start[2], "closed", `xl inherited the start lock's descriptor for ${start[1]}`);
    }
    assert.deepEqual(
      lines
        .filter((l) => l.startsWith("start"))
        .map((l) => path.basename(l.split(" ")[1] ?? ""))
        .sort(),
      names.map((n) => `${n}.cfg`),
    );
  });
});
