/**
 * The hostile program for a lab dom0: the corpus of test/support/hostile.ts spliced into the inputs that take free
 * text and reach the dom0's scripts and configs (a file's path and content, a secret file's content, a volume's
 * name and label, a guest's kernel command line and owner), every value the engine's own `check` accepts, as
 * resources of test/lab/fixtures/hostile. test/lab/hostile.lab.test.ts (slow tier) declares the whole sample on the
 * dom0 image; the walkthrough (fast tier) a small one on the dom0 it made, as its admin.
 */
import * as fs from "node:fs";
import { Value } from "google-protobuf/google/protobuf/struct_pb";
import { parseAuthorizedKey, VERSION } from "../../provider";
import { failuresOf } from "../support/checked";
import { CANARY_DIR, CANARY_PREFIX, spliced, type HostileValue } from "../support/hostile";
import { LAB_NET, type Lab } from "./lab";

/** Where the program's files live on the dom0 (removed after). */
export const FILES = "/tmp/xe-hostile-lab";

/** The dom0's facts `check` needs (its connection; `user` when not root, who then works through sudo). */
export type LabConnection = Pick<Lab, "host" | "port" | "hostKey" | "privateKey"> & { user?: string };

export interface Declared {
  kind: string;
  name: string;
  args: Record<string, unknown>;
  dependsOn?: string[];
  /** What it carries: `RemoteFile path subst@append`. */
  carries: string;
}

/**
 * What a file written with `v` as its content reads back as: `v` as the engine carries it from the program to the
 * provider (its protobuf encoding, google-protobuf as @pulumi/pulumi uses it: a lone high surrogate is dropped, a lone
 * low one arrives as it was), then written as UTF-8 (a lone surrogate becomes U+FFFD). Both only touch strings that
 * are not well-formed UTF-16, which no UTF-8 file could hold as written; every other character arrives as written.
 */
export function asWritten(v: string): string {
  const carried = Value.deserializeBinary(Value.fromJavaScript(v).serializeBinary()).toJavaScript() as string;
  return Buffer.from(carried, "utf8").toString("utf8");
}

/** Whether the engine's own check accepts `args` for `kind` on `lab`'s dom0. */
function accepted(lab: LabConnection, kind: string, args: Record<string, unknown>): boolean {
  const raw = {
    connection: {
      host: lab.host,
      port: lab.port,
      hostKey: lab.hostKey,
      ...(lab.user ? { user: lab.user } : {}),
    },
    credentials: { privateKey: lab.privateKey },
    xenEstateVersion: VERSION,
    ...args,
  };
  return failuresOf(kind, raw).length === 0;
}

/**
 * The hostile values for one input, `valid` with each piece appended (the form that keeps a path under its
 * directory and a label short): those check accepts with `at(value)` as the args, canary pieces first.
 */
function acceptedValues(
  lab: LabConnection,
  kind: string,
  valid: string,
  at: (v: string) => Record<string, unknown>,
): HostileValue[] {
  const ok = spliced(valid).filter((h) => h.how === "append" && accepted(lab, kind, at(h.value)));
  const canary = (h: HostileValue): number => (h.value.includes(CANARY_PREFIX) ? 0 : 1);
  return ok.sort((a, b) => canary(a) - canary(b));
}

/**
 * One value carrying as many of the input's accepted hostile values ({@link acceptedValues}) as check accepts at once
 * (their pieces joined after `valid`), and the ids of those it carries.
 */
function packed(
  lab: LabConnection,
  kind: string,
  valid: string,
  at: (v: string) => Record<string, unknown>,
): { value: string; ids: string[] } {
  let value = valid;
  const ids: string[] = [];
  for (const h of acceptedValues(lab, kind, valid, at)) {
    const next = value + h.value.slice(valid.length);
    if (accepted(lab, kind, at(next))) {
      value = next;
      ids.push(h.id);
    }
  }
  return { value, ids };
}

/**
 * The resources of the program, each input's accepted hostile values spread over at most `perInput` of them (canary
 * pieces first, to bound the lab time); the guest (kernel command line and owner) only when `guest`.
 */
export function declare(lab: LabConnection, o: { perInput: number; guest: boolean }): Declared[] {
  const out: Declared[] = [];
  const file = (p: string, content: string, sensitive = false): Record<string, unknown> => ({
    path: p,
    content,
    mode: "0600",
    createDirectories: true,
    sensitive,
  });

  // A file's content: every accepted piece in one file, plain and secret.
  for (const sensitive of [false, true]) {
    const p = `${FILES}/content-${sensitive ? "secret" : "plain"}.txt`;
    const { value, ids } = packed(lab, "RemoteFile", "key = value\n", (v) => file(p, v, sensitive));
    out.push({
      kind: "RemoteFile",
      name: `content-${sensitive ? "secret" : "plain"}`,
      args: file(p, value, sensitive),
      carries: `RemoteFile content (${sensitive ? "sensitive" : "plain"}) ${ids.length} pieces`,
    });
  }

  // A file's path: one file per value (a path names one file).
  const base = `${FILES}/paths/app.conf`;
  acceptedValues(lab, "RemoteFile", base, (v) => file(v, "x\n"))
    .slice(0, o.perInput)
    .forEach((h, i) =>
      out.push({
        kind: "RemoteFile",
        name: `path-${i}`,
        args: file(h.value, "x\n"),
        carries: `RemoteFile path ${h.id}`,
      }),
    );

  // A volume's name and label: one volume per value.
  const volume = (name: string, label: string): Record<string, unknown> => ({
    name,
    size: "8MiB",
    filesystem: "ext4",
    label,
  });
  acceptedValues(lab, "LvmVolume", "xeh-name", (v) => volume(v, "xeh"))
    .slice(0, o.perInput)
    .forEach((h, i) =>
      out.push({
        kind: "LvmVolume",
        name: `lv-name-${i}`,
        args: volume(h.value, "xeh"),
        carries: `LvmVolume name ${h.id}`,
      }),
    );
  acceptedValues(lab, "LvmVolume", "xeh", (v) => volume("xeh-label", v))
    .slice(0, o.perInput)
    .forEach((h, i) =>
      out.push({
        kind: "LvmVolume",
        name: `lv-label-${i}`,
        args: volume(`xeh-label-${i}`, h.value),
        carries: `LvmVolume label ${h.id}`,
      }),
    );

  if (o.guest) {
    // A guest's kernel command line and owner: every accepted piece in one guest (the busybox kit, which takes
    // its address from the command line's first words and ignores the rest).
    out.push({
      kind: "LvmVolume",
      name: "guest-disk",
      args: { name: "xehg-disk", size: "8MiB" },
      carries: "a disk",
    });
    const cmdline = `console=hvc0 xe.ip=10.0.0.41/24 xe.gw=10.0.0.1 xe.name=xehg`;
    const owner = "xe-project/xe-stack/xehg";
    const guest = (c: string, o: string): Record<string, unknown> => ({
      name: "xehg",
      owner: o,
      ip: "10.0.0.41",
      memoryMiB: 160,
      type: "pv",
      boot: { kernel: `${LAB_NET.kitDir}/vmlinuz`, ramdisk: `${LAB_NET.kitDir}/initrd.gz`, cmdline: c },
      disks: [{ path: "/dev/vg0/xehg-disk", vdev: "xvda" }],
      shutdownTimeoutSeconds: 10,
    });
    const c = packed(lab, "NatDomU", cmdline, (v) => guest(v, owner));
    const o = packed(lab, "NatDomU", owner, (v) => guest(c.value, v));
    out.push({
      kind: "NatDomU",
      name: "guest",
      args: guest(c.value, o.value),
      dependsOn: ["guest-disk"],
      carries: `NatDomU boot.cmdline ${c.ids.length} pieces, owner ${o.ids.length} pieces`,
    });
  }
  return out;
}

/**
 * An admin's public key line as an operator might paste it, its comment carrying every one-line canary piece of the
 * corpus that `check` accepts there (any printable comment), as Dom0Access writes it into authorized_keys (blanks
 * between words collapsed to one). The walkthrough declares its admin with it: the pieces go through `pulumi up`,
 * Dom0Access's scripts and template and the dom0's sshd, and none may run.
 */
export function adminKeyWithHostileComment(keyLine: string): string {
  const [type, key] = keyLine.trim().split(/\s+/);
  const accepted = (comment: string): boolean =>
    !("error" in parseAuthorizedKey(`${type} ${key} ${comment}`));
  const pieces = spliced("ops")
    // Pieces of a key comment's length (the corpus's 4 KiB piece is the ssh tier's).
    .filter(
      (h) =>
        h.how === "append" && h.value.includes(CANARY_PREFIX) && h.value.length < 200 && accepted(h.value),
    )
    .map((h) => h.value.slice("ops".length));
  const comment = ["ops", ...pieces].join("").trim().split(/\s+/).join(" ");
  const line = `${type} ${key} ${comment}`;
  const parsed = parseAuthorizedKey(line);
  if ("error" in parsed || parsed.comment !== comment)
    throw new Error(`the hostile admin key is not accepted as it is: ${line}`);
  return line;
}

/**
 * The canary files on the dom0 (`run` runs a command there) and on this machine. /tmp exists on both, so a canary
 * that ran could not have failed for want of its directory.
 */
export async function canaries(run: (command: string) => Promise<string>): Promise<string[]> {
  const remote = await run(`ls -A ${CANARY_DIR} | { grep '^${CANARY_PREFIX}' || true; }`);
  const local = fs.readdirSync(CANARY_DIR).filter((f) => f.startsWith(CANARY_PREFIX));
  return [
    ...remote
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map((f) => `dom0:${f}`),
    ...local.map((f) => `here:${f}`),
  ];
}
