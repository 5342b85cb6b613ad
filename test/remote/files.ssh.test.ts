/**
 * Remote file primitives against a real sshd on this machine (so "remote" paths are local temp paths).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import {
  BACKUP_ROOT,
  BACKUPS_KEPT,
  hostContext,
  RefusedError,
  remoteFileKind,
  readRemoteFile,
  RemoteCommandError,
  RemoteHost,
  removeRemoteFile,
  sha256,
  SshPool,
  statRemoteFiles,
  withHostLock,
  writeRemoteFile,
} from "../../provider";
import type { Context, RemoteFileInputs } from "../../provider";
import { startLocalHost, Sshd } from "../support/sshd";

let sshd: Sshd;
let pool: SshPool;
let host: RemoteHost;
let dir: string;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "xe-files-"));
  ({ sshd, pool, host } = await startLocalHost(dir));
});

after(async () => {
  await pool.close();
  await sshd.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  fs.rmSync(path.join(BACKUP_ROOT, dir), { recursive: true, force: true });
});

describe("reading", () => {
  test("an absent file reads as null and a present one as its exact content", async () => {
    assert.equal(await readRemoteFile(host, path.join(dir, "nope")), null);
    fs.writeFileSync(path.join(dir, "present"), "line1\n\nline3 with 'quotes' and $dollar");
    assert.equal(
      await readRemoteFile(host, path.join(dir, "present")),
      "line1\n\nline3 with 'quotes' and $dollar",
    );
  });

  test("stat gives hash, owner and mode for many files in one round trip", async () => {
    const f = path.join(dir, "stat-me");
    fs.writeFileSync(f, "abc");
    fs.chmodSync(f, 0o640);
    const before = pool.stats.commands;
    const [a, b] = await statRemoteFiles(host, [f, path.join(dir, "missing")]);
    assert.deepEqual(a, { sha256: sha256("abc"), owner: "root", group: "root", mode: "640" });
    assert.equal(b, null);
    assert.equal(pool.stats.commands - before, 1);
  });
});

describe("atomic writes", () => {
  test("writes content with owner and mode, and a second write of the same content changes nothing", async () => {
    const f = path.join(dir, "app.conf");
    const content = "key = 'value'\nother = $HOME\n";
    assert.deepEqual(await writeRemoteFile(host, f, content, { mode: "600" }), { changed: true });
    assert.equal(fs.readFileSync(f, "utf8"), content);
    assert.equal(fs.statSync(f).mode & 0o777, 0o600);
    const st = fs.statSync(f);
    assert.deepEqual(await writeRemoteFile(host, f, content, { mode: "600" }), { changed: false });
    const st2 = fs.statSync(f);
    assert.equal(st2.ino, st.ino, "the file was not rewritten");
    assert.equal(st2.mtimeMs, st.mtimeMs);
    assert.deepEqual(
      fs.readdirSync(dir).filter((n) => n.includes("xen-estate")),
      [],
      "no temp files left",
    );
  });

  test("keeps a dated backup of the previous content outside the file's directory", async () => {
    const f = path.join(dir, "rotated.conf");
    await writeRemoteFile(host, f, "v1\n");
    const r = await writeRemoteFile(host, f, "v2\n");
    assert.equal(r.changed, true);
    assert.ok(r.backup?.startsWith(path.join(BACKUP_ROOT, dir, "rotated.conf.")), r.backup);
    assert.equal(fs.readFileSync(r.backup!, "utf8"), "v1\n");
    assert.equal(fs.readFileSync(f, "utf8"), "v2\n");
    assert.deepEqual(
      fs.readdirSync(dir).filter((n) => n.startsWith("rotated")),
      ["rotated.conf"],
    );
  });

  test("a failing validation leaves the old file untouched and says why", async () => {
    const f = path.join(dir, "validated.conf");
    await writeRemoteFile(host, f, "good\n");
    await assert.rejects(writeRemoteFile(host, f, "bad\n", { validate: "grep -q good %s" }), (e: unknown) => {
      assert.ok(e instanceof RemoteCommandError);
      assert.equal(e.exitCode, 65);
      assert.match(e.stderrTail, /validation of the new .*validated\.conf failed/);
      return true;
    });
    assert.equal(fs.readFileSync(f, "utf8"), "good\n");
    assert.deepEqual(
      fs.readdirSync(dir).filter((n) => n.includes("xen-estate")),
      [],
      "the temp file was removed",
    );
    assert.equal(
      (await writeRemoteFile(host, f, "still good\n", { validate: "grep -q good %s" })).changed,
      true,
    );
  });

  test("binary content and content without a trailing newline survive the trip", async () => {
    const f = path.join(dir, "blob");
    const bytes = Buffer.from([0, 1, 2, 255, 10, 13, 39, 34]);
    await writeRemoteFile(host, f, bytes);
    assert.deepEqual(fs.readFileSync(f), bytes);
  });

  test("parallel writers to one file take turns under the host lock", async () => {
    const f = path.join(dir, "counter");
    fs.writeFileSync(f, "0");
    // Each script reads, sleeps and writes: without the lock the increments would be lost.
    const bump = withHostLock(`n=$(cat ${f}); sleep 0.2; echo $((n + 1)) > ${f}`);
    await Promise.all(Array.from({ length: 5 }, () => host.script(bump)));
    assert.equal(fs.readFileSync(f, "utf8").trim(), "5");
  });

  test("removing a file moves it to the backups; removing it again is fine", async () => {
    const f = path.join(dir, "gone.conf");
    fs.writeFileSync(f, "bye");
    assert.equal(await removeRemoteFile(host, f), "removed");
    assert.equal(fs.existsSync(f), false);
    assert.ok(fs.readdirSync(path.join(BACKUP_ROOT, dir)).some((n) => n.startsWith("gone.conf.")));
    assert.equal(await removeRemoteFile(host, f), "absent");
  });
});

describe("originals and regular files only", () => {
  const ctx = (): Context => hostContext(host);
  const inputs = (p: string, content: string, over: Partial<RemoteFileInputs> = {}): RemoteFileInputs => ({
    connection: host.conn,
    xenEstateVersion: "test",
    path: p,
    content,
    owner: "root",
    group: "root",
    mode: "644",
    validate: null,
    createDirectories: false,
    reloadCommand: null,
    sensitive: false,
    keepBackups: true,
    ...over,
  });

  test("destroy after more updates than the backups kept still puts the original file back", async () => {
    const f = path.join(dir, "sshd_config");
    fs.writeFileSync(f, "Port 22 # the original\n");
    let outs = await remoteFileKind.create(ctx(), inputs(f, "v0\n"), () => undefined);
    assert.ok(outs.previousBackup?.endsWith(".original"), String(outs.previousBackup));
    for (let i = 1; i <= BACKUPS_KEPT + 2; i++)
      outs = await remoteFileKind.update(ctx(), "id", outs, inputs(f, `v${i}\n`), {
        changed: [],
        replaces: [],
        classes: {},
      });
    const dated = fs.readdirSync(path.join(BACKUP_ROOT, dir)).filter((n) => /^sshd_config\.2/.test(n));
    assert.equal(dated.length, BACKUPS_KEPT, "the dated backups rotate");
    await remoteFileKind.delete(ctx(), "id", outs);
    assert.equal(fs.readFileSync(f, "utf8"), "Port 22 # the original\n");
  });

  test("a file whose name is part of a managed file's name still has its original kept and put back", async () => {
    // xen-estate manages /etc/default/xendomains; /etc/default/xen beside it is another file with an original of its own.
    const longer = path.join(dir, "xendomains");
    const shorter = path.join(dir, "xen");
    fs.writeFileSync(longer, "XENDOMAINS_SAVE= # the original\n");
    fs.writeFileSync(shorter, "TOOLSTACK=xl # the original\n");
    await remoteFileKind.create(ctx(), inputs(longer, "managed\n"), () => undefined);
    const outs = await remoteFileKind.create(ctx(), inputs(shorter, "managed\n"), () => undefined);
    assert.ok(outs.previousBackup?.endsWith(".original"), String(outs.previousBackup));
    await remoteFileKind.delete(ctx(), "id", outs);
    assert.equal(fs.readFileSync(shorter, "utf8"), "TOOLSTACK=xl # the original\n");
  });

  test("destroy refuses, and removes nothing, when the original it must put back is gone", async () => {
    const f = path.join(dir, "issue");
    fs.writeFileSync(f, "original\n");
    const outs = await remoteFileKind.create(ctx(), inputs(f, "managed\n"), () => undefined);
    fs.rmSync(outs.previousBackup!);
    await assert.rejects(remoteFileKind.delete(ctx(), "id", outs), RefusedError);
    assert.equal(fs.readFileSync(f, "utf8"), "managed\n");
  });

  test("a path that names a directory or a symlink is refused, and the directory is left as it was", async () => {
    const d = path.join(dir, "boot");
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, "vmlinuz"), "kernel");
    await assert.rejects(
      remoteFileKind.create(ctx(), inputs(d, "x"), () => undefined),
      /is not a regular file/,
    );
    await assert.rejects(
      removeRemoteFile(host, d),
      (e: unknown) => e instanceof RefusedError && /not a regular file/.test(e.message),
    );
    assert.deepEqual(fs.readdirSync(d), ["vmlinuz"]);
    const link = path.join(dir, "passwd-link");
    fs.symlinkSync("/etc/passwd", link);
    const before = fs.readFileSync("/etc/passwd", "utf8");
    await assert.rejects(writeRemoteFile(host, link, "owned\n"), /is a symlink/);
    assert.equal(fs.readFileSync("/etc/passwd", "utf8"), before);
  });

  test("a path that names a device is refused by create and by delete, and the device stays", async () => {
    const dev = path.join(dir, "null-device");
    execFileSync("mknod", [dev, "c", "1", "3"]);
    await assert.rejects(
      remoteFileKind.create(ctx(), inputs(dev, "x"), () => undefined),
      /is not a regular file/,
    );
    await assert.rejects(
      removeRemoteFile(host, dev),
      (e: unknown) => e instanceof RefusedError && /not a regular file/.test(e.message),
    );
    assert.ok(fs.statSync(dev).isCharacterDevice(), "the device node is still there");
  });

  test("a secret file's backups are mode 600, its validator's output is not shown, and its backups go with it", async () => {
    const f = path.join(dir, "secret.env");
    fs.writeFileSync(f, "TOKEN=old-token-value\n");
    const secret = "TOKEN=s3cr3t-token-value-9f2";
    await assert.rejects(
      writeRemoteFile(host, f, `${secret}\n`, { sensitive: true, validate: "cat %s; false" }),
      (e: unknown) =>
        e instanceof RemoteCommandError && !e.message.includes("s3cr3t") && /not shown/.test(e.message),
    );
    const outs = await remoteFileKind.create(
      ctx(),
      inputs(f, `${secret}\n`, { sensitive: true, keepBackups: false, mode: "600" }),
      () => undefined,
    );
    await remoteFileKind.update(
      ctx(),
      "id",
      outs,
      inputs(f, "TOKEN=third\n", { sensitive: true, keepBackups: false, mode: "600" }),
      {
        changed: [],
        replaces: [],
        classes: {},
      },
    );
    const backups = fs.readdirSync(path.join(BACKUP_ROOT, dir)).filter((n) => n.startsWith("secret.env."));
    assert.ok(backups.length >= 2, backups.join());
    for (const b of backups) assert.equal(fs.statSync(path.join(BACKUP_ROOT, dir, b)).mode & 0o777, 0o600, b);
    await remoteFileKind.delete(ctx(), "id", { ...outs, keepBackups: false, sensitive: true });
    assert.deepEqual(
      fs.readdirSync(path.join(BACKUP_ROOT, dir)).filter((n) => /^secret\.env\.2/.test(n)),
      [],
      "no dated backup of the secret is left",
    );
    assert.equal(fs.readFileSync(f, "utf8"), "TOKEN=old-token-value\n", "the original came back");
  });
});
