/**
 * The hostile program for a lab dom0: the corpus of test/support/hostile.ts spliced into the inputs that take free
 * text and reach the dom0's scripts and configs (a file's path and content, a secret file's content, a volume's
 * name and label, a guest's kernel command line and owner), every value the engine's own `check` accepts, as
 * resources of test/lab/fixtures/hostile. test/lab/hostile.lab.test.ts (slow tier) declares the whole sample on the
 * dom0 image; the walkthrough (fast tier) a small one on the dom0 it made, as its admin.
 */
import * as fs from "node:fs";
import { Value } from "google-protobuf/google/protobuf/struct_pb";
import { parseAuthorizedKey, publicKeyOf, VERSION } from "../../provider";
import { failuresOf } from "../support/checked";
import { CANARY_DIR, CANARY_PREFIX, spliced, type HostileValue } from "../support/hostile";
import { kindVariants, pathText, withValue, type InputPath } from "../support/kind-inputs";
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
 * `base` with every corpus piece appended that `check` accepts in `kind`'s input at `at`, packed while check accepts
 * the whole (canary pieces first), the kind's other inputs those of its first variant in test/support/kind-inputs.ts:
 * for an input a component passes on to one of its resources (a Dom0Host's admin name is Dom0Access's adminUser).
 */
export function packedInKind(kind: string, at: InputPath, base: string): { value: string; ids: string[] } {
  const variant = kindVariants().find((v) => v.kind === kind && v.first);
  if (!variant) throw new Error(`no inputs of ${kind} in test/support/kind-inputs.ts`);
  const accepted = (v: string): boolean => failuresOf(kind, withValue(variant.inputs, at, v)).length === 0;
  if (!accepted(base)) throw new Error(`${kind} refuses ${pathText(at)} = ${JSON.stringify(base)}`);
  const canary = (h: HostileValue): number => (h.value.includes(CANARY_PREFIX) ? 0 : 1);
  let value = base;
  const ids: string[] = [];
  for (const h of spliced(base)
    .filter((x) => x.how === "append" && accepted(x.value))
    .sort((a, b) => canary(a) - canary(b))) {
    const next = value + h.value.slice(base.length);
    if (accepted(next)) {
      value = next;
      ids.push(h.id);
    }
  }
  return { value, ids };
}

/**
 * A guest's `owner` as its resource sets it from the program (provider/guest/claims.ts `ownerOf`: project, stack and
 * resource name, other characters than `[A-Za-z0-9._/:-]` made `_`), for a resource named `name` in the fixture's
 * project, on a stack named as the harness names them (`t-` and 8 and 6 characters): a program sets a guest's owner
 * only by naming the resource, so the hostile owners {@link declare} chooses travel as resource names.
 */
export function ownerOfName(name: string): string {
  return `${HOSTILE_PROJECT}/t-xxxxxxxx-xxxxxx/${name}`;
}

/** The resource name that gives a guest the owner `owner` ({@link ownerOfName}). */
function nameOfOwner(owner: string): string {
  return owner.slice(ownerOfName("").length);
}

/** The fixture program's project (test/lab/fixtures/hostile/Pulumi.yaml). */
const HOSTILE_PROJECT = "xen-estate-lab-hostile";

/** What {@link declare} puts in the program. */
export interface DeclareOptions {
  /** At most this many resources per input that takes one value per resource (canary pieces first). */
  perInput: number;
  /**
   * The secret file's first line: a value unique to the run, which a sweep for secrets can look for (the file's
   * other lines are the corpus, which the plain file holds too). @default none
   */
  secretLine?: string;
  /** A NatDomU whose kernel command line and owner carry the corpus (the busybox kit, on a volume of its own). */
  guest: boolean;
  /**
   * A VarnishFrontend whose site names, health-check path and cache size carry the corpus, in front of `backend`
   * (`IPv4:port`, an HTTP server on the dom0 that answers every path, which the test runs).
   */
  frontend?: { backend: string };
  /**
   * A BridgedDomU whose own inputs carry the corpus: its domain name, owner, kernel command line, disk path, bridge
   * and unattended install (image path, nameservers, authorized keys). The test makes what those values name before
   * `up` ({@link bridgedNeeds}): the bridge, a device node at the disk's path, the image at its path.
   */
  bridged?: boolean;
  /**
   * Two of a Dom0Host's concerns whose free text carries the corpus, both `onDelete: "restore"`: Dom0XenBoot (Xen's
   * and dom0's command-line arguments, xl's default bridge; GRUB's configuration is made from them) and
   * Dom0Monitoring (where mail goes, the relay, the mail name, an account whose mail is forwarded; dma).
   */
  concerns?: boolean;
}

/** The bridged guest's address on its (hostile) bridge, where the dom0 is {@link BRIDGED_NET}.1. */
export const BRIDGED_NET = { prefix: "10.98.0", guest: "10.98.0.42" };

/** What a BridgedDomU of {@link declare} needs on the dom0 before `up`, by the values it carries. */
export interface BridgedNeeds {
  domain: string;
  bridge: string;
  disk: string;
  image: string;
  authorizedKeys: string[];
  nameservers: string[];
}

/** The needs of the program's BridgedDomU, or undefined when it has none. */
export function bridgedNeeds(declared: readonly Declared[]): BridgedNeeds | undefined {
  const g = declared.find((d) => d.kind === "BridgedDomU");
  if (!g) return undefined;
  const a = g.args as {
    name: string;
    bridge: string;
    disks: { path: string }[];
    install: { image: string; authorizedKeys: string[]; nameservers: string[] };
  };
  return {
    domain: a.name,
    bridge: a.bridge,
    disk: a.disks[0]!.path,
    image: a.install.image,
    authorizedKeys: a.install.authorizedKeys,
    nameservers: a.install.nameservers,
  };
}

/**
 * The resources of the program, each input's accepted hostile values spread over at most `perInput` of them (canary
 * pieces first, to bound the lab time); the guests and the frontend as {@link DeclareOptions} asks.
 */
export function declare(lab: LabConnection, o: DeclareOptions): Declared[] {
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
    const base = sensitive && o.secretLine ? `${o.secretLine}\nkey = value\n` : "key = value\n";
    const { value, ids } = packed(lab, "RemoteFile", base, (v) => file(p, v, sensitive));
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
    const guest = (c: string, owner = ownerOfName("guest")): Record<string, unknown> => ({
      name: "xehg",
      owner,
      ip: "10.0.0.41",
      memoryMiB: 160,
      type: "pv",
      boot: { kernel: `${LAB_NET.kitDir}/vmlinuz`, ramdisk: `${LAB_NET.kitDir}/initrd.gz`, cmdline: c },
      disks: [{ path: "/dev/vg0/xehg-disk", vdev: "xvda" }],
      shutdownTimeoutSeconds: 10,
    });
    const c = packed(lab, "NatDomU", cmdline, (v) => guest(v));
    const o = packed(lab, "NatDomU", ownerOfName("guest"), (v) => guest(c.value, v));
    const { owner: _, ...args } = guest(c.value);
    out.push({
      kind: "NatDomU",
      name: nameOfOwner(o.value),
      args,
      dependsOn: ["guest-disk"],
      carries: `NatDomU boot.cmdline ${c.ids.length} pieces, owner ${o.ids.length} pieces`,
    });
  }

  if (o.frontend) out.push(frontend(lab, o.frontend.backend, o.perInput));
  if (o.bridged) out.push(bridged(lab, pubKeyOf(lab)));
  if (o.concerns) out.push(xenBoot(lab), monitoring(lab));
  return out;
}

/** Every piece `check` accepts in each of `valid`'s inputs, packed one input after the other. */
function packedAll<T extends Record<string, string>>(
  lab: LabConnection,
  kind: string,
  valid: T,
  args: (t: T) => Record<string, unknown>,
): { values: T; carried: string } {
  const t = { ...valid };
  const carried: string[] = [];
  for (const [input, base] of Object.entries(valid) as [keyof T & string, string][]) {
    const p = packed(lab, kind, base, (v) => args({ ...t, [input]: v }));
    t[input] = p.value as T[typeof input];
    carried.push(`${input} ${p.ids.length} pieces`);
  }
  return { values: t, carried: `${kind} ${carried.join(", ")}` };
}

/** Dom0XenBoot with dom0's memory as the lab runs it, its free text carrying every accepted piece. */
function xenBoot(lab: LabConnection): Declared {
  const args = (t: { xenArgs: string; dom0KernelArgs: string; bridge: string }): Record<string, unknown> => ({
    dom0MemMiB: 1024,
    dom0Vcpus: 2,
    ...t,
    onDelete: "restore",
  });
  const { values, carried } = packedAll(
    lab,
    "Dom0XenBoot",
    { xenArgs: "console=com1 com1=115200,8n1", dom0KernelArgs: "console=hvc0", bridge: "xenbr0" },
    args,
  );
  return { kind: "Dom0XenBoot", name: "xen-boot", args: args(values), carries: carried };
}

/** Dom0Monitoring without disks to watch (the lab's virtual disk has no SMART), its free text carrying the corpus. */
function monitoring(lab: LabConnection): Declared {
  const args = (t: {
    mailTo: string;
    relay: string;
    mailName: string;
    user: string;
  }): Record<string, unknown> => ({
    mailTo: t.mailTo,
    relay: { host: t.relay, port: 25 },
    mailName: t.mailName,
    users: [t.user],
    onDelete: "restore",
  });
  const { values, carried } = packedAll(
    lab,
    "Dom0Monitoring",
    { mailTo: "ops@xeh.test", relay: "mail.xeh.test", mailName: "dom0.xeh.test", user: "xeops" },
    args,
  );
  return { kind: "Dom0Monitoring", name: "monitoring", args: args(values), carries: carried };
}

/**
 * A VarnishFrontend of two sites: the first's host names each carry one accepted piece (up to `perInput`), the
 * second's one name carries every piece accepted at once; the second's health-check path and the cache size carry
 * every piece accepted there. Both sites' backend is `backend`.
 */
function frontend(lab: LabConnection, backend: string, perInput: number): Declared {
  const args = (
    names: string[],
    name: string,
    probePath: string,
    cacheSize: string,
  ): Record<string, unknown> => ({
    sites: [
      { hostnames: names, backend, healthCheck: { path: "/", intervalSeconds: 1, timeoutSeconds: 1 } },
      { hostnames: [name], backend, healthCheck: { path: probePath, intervalSeconds: 1, timeoutSeconds: 1 } },
    ],
    cacheSize,
    readyTimeoutSeconds: 120,
  });
  const single = acceptedValues(lab, "VarnishFrontend", "xeh-one.test", (v) =>
    args([v], "xeh-all.test", "/xeh-health", "64MiB"),
  ).slice(0, perInput);
  const names = single.map((h) => h.value);
  const all = packed(lab, "VarnishFrontend", "xeh-all.test", (v) => args(names, v, "/xeh-health", "64MiB"));
  const probe = packed(lab, "VarnishFrontend", "/xeh-health", (v) => args(names, all.value, v, "64MiB"));
  const cache = packed(lab, "VarnishFrontend", "64MiB", (v) => args(names, all.value, probe.value, v));
  return {
    kind: "VarnishFrontend",
    name: "frontend",
    args: args(names, all.value, probe.value, cache.value),
    carries: `VarnishFrontend hostnames ${single.map((h) => h.id).join(" ")}, a hostname of ${all.ids.length} pieces, healthCheck.path ${probe.ids.length} pieces, cacheSize ${cache.ids.length} pieces`,
  };
}

/** The public key of the lab's private key, as an authorized_keys line (its comment `xeh`). */
function pubKeyOf(lab: LabConnection): string {
  const key = publicKeyOf(lab.privateKey);
  if (!key) throw new Error("the lab's private key has no public key");
  return `${key} xeh`;
}

/**
 * A BridgedDomU (the busybox kit, booted directly, its address from its command line) whose own free-text inputs
 * carry every piece `check` accepts there at once: the domain name, owner, kernel command line, disk path, bridge,
 * and its unattended install's image path, nameservers and authorized keys (the key's comment).
 */
function bridged(lab: LabConnection, keyLine: string): Declared {
  type T = {
    name: string;
    owner: string;
    cmdline: string;
    disk: string;
    bridge: string;
    image: string;
    nameserver: string;
    key: string;
  };
  const valid: T = {
    name: "xehb",
    owner: ownerOfName("bridged"),
    cmdline: `console=hvc0 xe.ip=${BRIDGED_NET.guest}/24 xe.gw=${BRIDGED_NET.prefix}.1 xe.name=xehb`,
    disk: "/dev/xehb/disk",
    bridge: "xehbr",
    image: `${FILES}/image/rootfs.tar.gz`,
    nameserver: "10.98.0.53",
    key: keyLine,
  };
  const args = (t: T): Record<string, unknown> => ({
    name: t.name,
    owner: t.owner,
    ip: BRIDGED_NET.guest,
    prefix: 24,
    gateway: `${BRIDGED_NET.prefix}.1`,
    mac: "00:16:3e:5e:0e:42",
    bridge: t.bridge,
    memoryMiB: 160,
    type: "pv",
    boot: { kernel: `${LAB_NET.kitDir}/vmlinuz`, ramdisk: `${LAB_NET.kitDir}/initrd.gz`, cmdline: t.cmdline },
    disks: [{ path: t.disk, vdev: "xvda" }],
    install: { image: t.image, nameservers: [t.nameserver], authorizedKeys: [t.key] },
    waitForNetwork: { port: 80, timeoutSeconds: 180 },
    shutdownTimeoutSeconds: 10,
  });
  const { values: t, carried } = packedAll(lab, "BridgedDomU", valid, args);
  const { owner: _, ...declared } = args(t);
  return {
    kind: "BridgedDomU",
    name: nameOfOwner(t.owner),
    args: declared,
    carries: carried,
  };
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
