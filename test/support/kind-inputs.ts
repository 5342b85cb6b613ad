/**
 * One valid set of inputs for every registered resource kind, as the engine hands them to `check` (connection and
 * credentials already split), and a walker over their input paths. Tests that feed every input something hostile
 * start from these: a kind without an entry here fails those tests until it gets one.
 *
 * Values are chosen to be distinctive (`vgxe`, `webxe-root`…) so that a test can find them, and anything made from
 * them, in a rendered script or file.
 */
import { VERSION } from "../../provider";
import { fixtureKeys } from "./fixture-keys";

/** One variant of a kind's valid inputs. */
export interface KindVariant {
  /** `BridgedDomU/image`. */
  name: string;
  kind: string;
  inputs: Record<string, unknown>;
  /** The kind's first variant: the one on which the common inputs the kind reads are walked. */
  first: boolean;
}

export interface KindEntry {
  variants: { variant: string; inputs: Record<string, unknown> }[];
  /**
   * Inputs that are shell commands by contract (run as given, with the host's shell): a value there may run
   * anything, so they are checked for reaching the script intact and quoted, not for the canary.
   */
  commands?: readonly string[];
  /**
   * Inputs checked against each other: a bad value of the key may be reported on the listed inputs instead (the
   * rule is about the pair, e.g. "`maxVcpus` must be at least vcpus (42)").
   */
  related?: Readonly<Record<string, readonly string[]>>;
}

const hostKey = fixtureKeys.hostFingerprint;
const guestKey = fixtureKeys.hostPublicKey;

/** A connection with a jump host and credentials of every kind, as the engine passes it. */
const connection = {
  host: "dom0.xe-hostile.test",
  port: 22,
  user: "xeadmin",
  hostKey,
  commandTimeout: 600,
  proxy: { host: "jump.xe-hostile.test", user: "xejump", hostKey, port: 2222 },
};
const credentials = {
  password: "xe-hostile-password",
  agentSocketPath: "/run/xe-hostile/agent.sock",
  proxy: { password: "xe-hostile-jump-password" },
};
const common = { connection, credentials, xenEstateVersion: VERSION };
/**
 * The same with a private key. Parsing a key is the slowest part of `check` (about a millisecond), and what it
 * does is the same for every kind, so one kind's inputs carry it.
 */
const commonWithKey = {
  ...common,
  credentials: { ...credentials, privateKey: fixtureKeys.clientPrivateKey },
};

const guestBase = {
  ...common,
  name: "webxe",
  owner: "xe-project/xe-stack/webxe",
  vcpus: 1,
  maxVcpus: 2,
  memoryMiB: 512,
  type: "pvh",
  autostart: true,
  running: true,
  onPoweroff: "destroy",
  onReboot: "restart",
  onCrash: "restart",
  waitForNetwork: { port: 22, timeoutSeconds: 60 },
  shutdownTimeoutSeconds: 60,
};
const directBoot = {
  kernel: "/var/lib/xe-hostile/vmlinuz",
  ramdisk: "/var/lib/xe-hostile/initrd.img",
  cmdline: "root=/dev/xvda ro console=hvc0",
};
const disks = [
  { path: "/dev/vgxe/webxe-root", vdev: "xvda", access: "rw" },
  { path: "/dev/vgxe/webxe-swap", vdev: "xvdb", access: "rw" },
];
const imageInstall = {
  image: "/var/lib/xe-hostile/rootfs.tar.gz",
  nameservers: ["192.0.2.53", "192.0.2.54"],
  authorizedKeys: [`${guestKey} xe-admin`],
};
const debootstrapInstall = {
  debootstrap: {
    suite: "bookworm",
    // The middle of each URL (where the corpus inserts its pieces) lies in its password, which is decoded.
    mirror: "http://xemirror:xemirrorpass@mirror.xe.test/d",
    proxy: "http://xeproxy:xeproxypass@proxy.xe.test:31",
    include: ["xe-tools", "curl"],
    variant: "minbase",
  },
  nameservers: ["192.0.2.53"],
  authorizedKeys: [`${guestKey} xe-admin`],
};

/** A guest's pairs: the boot values and their maxima. */
const GUEST_RELATED = { vcpus: ["maxVcpus"], memoryMiB: ["maxMemoryMiB"] };

/** The table. Keys are kind names; `kindNames()` must list no kind that is missing here. */
export const KIND_INPUTS: Record<string, KindEntry> = {
  RemoteFile: {
    commands: ["validate", "reloadCommand"],
    variants: [
      {
        variant: "plain",
        inputs: {
          ...commonWithKey,
          path: "/etc/xe-hostile/app.conf",
          content: "key = value\n",
          owner: "daemon",
          group: "adm",
          mode: "0640",
          validate: "test -s %s",
          createDirectories: true,
          reloadCommand: "true xe-reload",
          sensitive: false,
          keepBackups: true,
        },
      },
      {
        variant: "secret",
        inputs: {
          ...common,
          path: "/etc/xe-hostile/secret.conf",
          content: "token = xe-hostile-token\n",
          validate: "grep -q token %s",
          sensitive: true,
          keepBackups: false,
        },
      },
    ],
  },
  LvmVolume: {
    related: { filesystem: ["label"] },
    variants: [
      {
        variant: "ext4",
        inputs: {
          ...common,
          volumeGroup: "vgxe",
          name: "webxe-root",
          size: "10GiB",
          filesystem: "ext4",
          label: "xelabel",
          mkfsOptions: ["-m", "1"],
          adopt: false,
          allowReplace: false,
          onDelete: "remove",
          wipeOnDelete: "zero",
        },
      },
      {
        variant: "swap",
        inputs: {
          ...common,
          volumeGroup: "vgxe",
          name: "webxe-swap",
          size: 536870912,
          filesystem: "swap",
          label: "xeswap",
          adopt: true,
          onDelete: "remove",
          wipeOnDelete: "discard",
        },
      },
      {
        variant: "snapshot",
        inputs: {
          ...common,
          volumeGroup: "vgxe",
          name: "webxe-root-preboot",
          size: "8GiB",
          snapshotOf: "webxe-root",
          onDelete: "remove",
          wipeOnDelete: "zero",
        },
      },
    ],
  },
  BridgedDomU: {
    related: GUEST_RELATED,
    variants: [
      {
        variant: "direct+image",
        inputs: {
          ...guestBase,
          boot: directBoot,
          disks,
          install: imageInstall,
          ip: "203.0.113.10",
          mac: "00:50:56:00:12:34",
          bridge: "xenbr0",
          prefix: 32,
          gateway: "203.0.113.1",
        },
      },
      {
        variant: "pvgrub2+debootstrap",
        inputs: {
          ...guestBase,
          boot: { bootloader: "pvgrub2" },
          disks,
          install: debootstrapInstall,
          ip: "203.0.113.11",
          mac: "00:50:56:00:12:35",
          gateway: "203.0.113.1",
        },
      },
    ],
  },
  NatDomU: {
    related: GUEST_RELATED,
    variants: [
      {
        variant: "direct+debootstrap",
        inputs: {
          ...guestBase,
          boot: { kernel: "/boot/vmlinuz-6.1.0-xe-amd64", cmdline: "root=/dev/xvda ro" },
          disks,
          install: debootstrapInstall,
          ip: "10.0.0.9",
          network: "10.0.0.0/24",
          mac: "00:16:3e:00:00:09",
        },
      },
      {
        variant: "pygrub+image",
        inputs: {
          ...guestBase,
          boot: { bootloader: "pygrub" },
          disks: [disks[0]],
          install: imageInstall,
          ip: "10.0.0.10",
        },
      },
    ],
  },
  Dom0Access: {
    related: { distribution: ["release"] },
    variants: [
      {
        variant: "debian",
        inputs: {
          ...common,
          distribution: "debian",
          release: "bookworm",
          adminUser: "xeops",
          authorizedKeys: [`${guestKey} xe-admin@xe-hostile`, fixtureKeys.clientPublicKey],
          sshPort: 2222,
          connectPort: 2222,
          confirmSeconds: 90,
          onDelete: "restore",
        },
      },
      {
        variant: "ubuntu+key",
        inputs: {
          ...commonWithKey,
          distribution: "ubuntu",
          release: "noble",
          adminUser: "xeadmin",
          authorizedKeys: [fixtureKeys.clientPublicKey],
          sshPort: 22,
          connectPort: 10022,
          onDelete: "keep",
        },
      },
    ],
  },
  Dom0Firewall: {
    related: { sshPort: ["openTcp"], "openTcp[0]": ["openTcp"], "openTcp[1]": ["openTcp"] },
    variants: [
      {
        variant: "limited",
        inputs: {
          ...common,
          sshPort: 2222,
          trustedSources: ["198.51.100.0/24", "2001:db8::/32", "203.0.113.7"],
          openTcp: [80, 443],
          openUdp: [51820],
          confirmSeconds: 60,
          onDelete: "restore",
        },
      },
    ],
  },
  Dom0Monitoring: {
    variants: [
      {
        variant: "relay+smart",
        inputs: {
          ...common,
          mailTo: "ops@xe-hostile.test",
          relay: { host: "mail.xe-hostile.test", port: 587, starttls: true },
          mailName: "dom0.xe-hostile.test",
          users: ["xeops", "xebackup"],
          smartDisks: ["/dev/nvme0n1", { device: "/dev/sda", schedule: "(S/../.././02|L/../../6/03)" }],
          onDelete: "restore",
        },
      },
    ],
  },
  Dom0Network: {
    related: { uplink: ["bridge"], bridge: ["uplink"], distribution: ["release"] },
    variants: [
      {
        variant: "debian-static",
        inputs: {
          ...common,
          distribution: "debian",
          release: "bookworm",
          uplink: "enp0s31f6",
          mac: "52:54:00:12:34:56",
          bridge: "xenbr0",
          address: { address: "203.0.113.5/32", gateway: "203.0.113.1" },
          ipv6: { address: "2001:db8:1::2/64", gateway: "fe80::1" },
          proxyArp: true,
          bridgeNetfilter: true,
          onDelete: "restore",
        },
      },
      {
        variant: "ubuntu-dhcp",
        inputs: {
          ...common,
          distribution: "ubuntu",
          release: "noble",
          uplink: "eth0",
          mac: "52:54:00:ab:cd:ef",
          bridge: "xebr1",
          address: "dhcp",
          netplanFile: "/etc/netplan/50-xe.yaml",
          onDelete: "keep",
        },
      },
    ],
  },
  Dom0Packages: {
    related: { distribution: ["release"] },
    variants: [
      {
        variant: "debian",
        inputs: {
          ...common,
          distribution: "debian",
          release: "bookworm",
          mirror: "http://mirror.xe-hostile.test/debian",
          securityMirror: "https://security.xe-hostile.test/debian-security",
          proxy: "http://proxy.xe-hostile.test:3142",
          upgrade: true,
          recommends: false,
          packages: ["xen-system-amd64", "xe-tools"],
          onDelete: "restore",
        },
      },
      {
        variant: "ubuntu",
        inputs: {
          ...common,
          distribution: "ubuntu",
          release: "noble",
          upgrade: false,
          recommends: true,
          packages: ["xen-hypervisor-4.17-amd64"],
        },
      },
    ],
  },
  Dom0Reboot: {
    variants: [
      {
        variant: "owed-nothing",
        inputs: {
          ...common,
          triggers: { network: "xe-network-digest", xen: "xe-xen-digest" },
          xenVersion: "4.17",
          dom0MemMiB: 2048,
          bridge: "xenbr0",
          uplink: "enp0s31f6",
          networkFile: "/etc/network/interfaces",
          allowReboot: true,
          timeoutSeconds: 900,
        },
      },
    ],
  },
  Dom0XenBoot: {
    related: { xenArgs: ["dom0MemMiB"] },
    variants: [
      {
        variant: "console",
        inputs: {
          ...common,
          dom0MemMiB: 2048,
          dom0Vcpus: 2,
          xenArgs: "console=com1 com1=115200,8n1",
          dom0KernelArgs: "console=hvc0 earlyprintk=xen",
          bridge: "xenbr0",
          bootloaderRestrict: true,
          stopSeconds: 300,
          onDelete: "restore",
        },
      },
    ],
  },
  HetznerInstallimage: {
    variants: [
      {
        variant: "raid1",
        inputs: {
          ...common,
          connection: { ...connection, user: "root" },
          drives: [{ device: "/dev/nvme0n1", sizeBytes: 512110190592, serial: "XE0001" }, "/dev/nvme1n1"],
          wipeDisks: true,
          hostname: "dom0.xe-hostile.test",
          image: "/root/.oldroot/nfs/images/Debian-1210-bookworm-amd64-base.tar.gz",
          bootMiB: 1024,
          volumeGroup: "vgxe",
          rootGiB: 30,
          swapGiB: 4,
          bootTimeoutSeconds: 900,
        },
      },
    ],
  },
  LinodeMigration: {
    variants: [
      {
        variant: "direct+fixups",
        inputs: {
          ...common,
          source: {
            connection: { host: "vps.xe-hostile.test", port: 22, user: "root", hostKey },
            credentials: { password: "xe-hostile-source-password" },
            device: "/dev/sda",
            dom0Host: "10.0.0.77",
            dom0Port: 2200,
            live: false,
            authorizedKeysFile: "/root/.ssh/authorized_keys",
          },
          target: { device: "/dev/vgxe/webxe-root" },
          transfer: {
            method: "auto",
            compressionLevel: 3,
            chunkSize: "4MiB",
            deadlineSeconds: 86400,
            route: "direct",
          },
          verify: true,
          grow: true,
          convertToExt4: false,
          fixups: {
            hostname: "webxe",
            network: {
              address: "203.0.113.10/32",
              gateway: "203.0.113.1",
              nameservers: ["192.0.2.53"],
              interfaceNaming: "link",
            },
            fstab: "uuid",
            swapDevice: "/dev/xvdb",
          },
          allowReplace: false,
        },
      },
      {
        variant: "relay+live",
        inputs: {
          ...common,
          source: {
            connection: { host: "vps2.xe-hostile.test", user: "xesource", hostKey },
            credentials: { password: "xe-hostile-source-password" },
            device: "/dev/xvda",
            live: true,
          },
          target: { device: "/dev/vgxe/webxe-swap" },
          transfer: { method: "raw", chunkSize: 8388608, route: "relay" },
          verify: false,
          fixups: false,
        },
      },
    ],
  },
  VarnishFrontend: {
    variants: [
      {
        variant: "two-sites",
        inputs: {
          ...common,
          sites: [
            {
              hostnames: ["app.xe-hostile.test", "*.shop.xe-hostile.test"],
              backend: "10.0.0.5:8080",
              healthCheck: { path: "/xe-health", intervalSeconds: 5, timeoutSeconds: 2 },
              firstByteTimeoutSeconds: 60,
            },
            { hostnames: ["www.xe-hostile.test"], backend: "10.0.0.6", healthCheck: false },
          ],
          listen: [":80", "127.0.0.1:8080"],
          cacheSize: "256MiB",
          installPackage: true,
          keepVcls: 2,
          // The sandbox has no Varnish answering: the serving check runs, and gives up after a second.
          readyTimeoutSeconds: 1,
        },
      },
    ],
  },
};

/** Every variant of every kind in the table. */
export function kindVariants(): KindVariant[] {
  return Object.entries(KIND_INPUTS).flatMap(([kind, e]) =>
    e.variants.map((v, i) => ({ kind, name: `${kind}/${v.variant}`, inputs: v.inputs, first: i === 0 })),
  );
}

// --- Paths ----------------------------------------------------------------------------------------------------

export type InputPath = readonly (string | number)[];

/** `sites[0].hostnames[1]`, `connection.proxy.host`: how Checker names a property. */
export function pathText(p: InputPath): string {
  let out = "";
  for (const k of p) out += typeof k === "number" ? `[${k}]` : out === "" ? k : `.${k}`;
  return out;
}

/** Every path in `value` (objects and arrays included, the root left out), depth first, parents first. */
export function inputPaths(value: unknown, prefix: InputPath = []): { path: InputPath; value: unknown }[] {
  const out: { path: InputPath; value: unknown }[] = [];
  if (Array.isArray(value)) {
    value.forEach((v, i) => {
      out.push({ path: [...prefix, i], value: v });
      out.push(...inputPaths(v, [...prefix, i]));
    });
  } else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      out.push({ path: [...prefix, k], value: v });
      out.push(...inputPaths(v, [...prefix, k]));
    }
  }
  return out;
}

/** The string-valued paths of an input (`connection.host`, `disks[0].path`…), with their valid values. */
export function stringPaths(inputs: unknown): { path: InputPath; value: string }[] {
  return inputPaths(inputs).filter(
    (p): p is { path: InputPath; value: string } => typeof p.value === "string",
  );
}

/** Inputs every kind has, checked by the framework the same way for all (checkInputs → checkConnection). */
const COMMON_INPUTS = new Set(["connection", "credentials", "xenEstateVersion"]);
/** The variant whose common inputs are all walked (it carries a private key). */
export const COMMON_VARIANT = "RemoteFile/plain";
/** Common inputs a kind itself reads (its resource id, its host): walked on every kind's first variant. */
const KIND_READ_COMMON = new Set(["connection.host", "connection.user"]);

/**
 * The paths a test walks for a variant: its own inputs always; the common ones in full on {@link COMMON_VARIANT},
 * and those a kind reads itself on each kind's first variant. The rest of the common inputs are the framework's
 * (the same code for every kind), so walking them once stands for every kind.
 */
function walked(v: KindVariant, p: InputPath): boolean {
  if (!COMMON_INPUTS.has(String(p[0])) || v.name === COMMON_VARIANT) return true;
  return v.first && [...KIND_READ_COMMON].some((c) => pathText(p) === c || pathText(p).startsWith(`${c}.`));
}

/** The string paths a test walks for a variant (see {@link walked}). */
export function walkedStringPaths(v: KindVariant): { path: InputPath; value: string }[] {
  return stringPaths(v.inputs).filter((p) => walked(v, p.path));
}

/** Every path (of any type) a test walks for a variant. */
export function walkedPaths(v: KindVariant): InputPath[] {
  return inputPaths(v.inputs)
    .map((p) => p.path)
    .filter((p) => walked(v, p));
}

/** A copy of `inputs` with `value` at `path` (only the objects on the path are copied; the rest is shared). */
export function withValue(
  inputs: Record<string, unknown>,
  path: InputPath,
  value: unknown,
): Record<string, unknown> {
  const copy = (o: unknown): Record<string | number, unknown> =>
    (Array.isArray(o) ? [...(o as unknown[])] : { ...(o as object) }) as Record<string | number, unknown>;
  const root = copy(inputs);
  let o = root;
  for (const k of path.slice(0, -1)) {
    const child = copy(o[k]);
    o[k] = child;
    o = child;
  }
  o[path[path.length - 1]!] = value;
  return root;
}

/**
 * The property names a failure for `path` may carry: the path itself or any parent. Credentials are reported where
 * the program wrote them, in `connection` (the split into `credentials` is the framework's, not the user's).
 */
export function acceptableProperties(path: InputPath, kind?: string): string[] {
  const related = kind ? (KIND_INPUTS[kind]?.related?.[pathText(path)] ?? []) : [];
  // The same for a kind's other connections (`source.credentials` → `source.connection`).
  const c = path.indexOf("credentials");
  const aliased: InputPath = c >= 0 ? [...path.slice(0, c), "connection", ...path.slice(c + 1)] : path;
  // Never "": that is what checkInputs reports when a kind's check threw.
  const out: string[] = [];
  for (let n = 1; n <= aliased.length; n++) out.push(pathText(aliased.slice(0, n)));
  return [...out, ...related];
}
