/**
 * Unattended install of a fresh root disk (from an image on the dom0, or by debootstrap from a mirror) and the
 * guest's own settings (hostname, network, resolvers, root's SSH keys) written into its filesystem.
 *
 * The disk is touched only when no guest holds it and it is not mounted elsewhere; an install runs only onto an
 * empty ext4 filesystem (or redoes one its marker shows was interrupted). Installs take a lock per disk, not the
 * host's lock, so a long debootstrap never holds up the rest of the host. Files written into a guest's filesystem
 * never follow a symlink out of it, and a file replaced there is kept under /var/backups/xen-estate inside it.
 */
import { recordedSecret } from "../core/secrets";
import { shellQuote } from "../core/shell";
import type { Context } from "../framework/kind";
import { DEVICE_HOLDER_FUNCTIONS } from "../remote/devices";
import { deviceLock, withHostLock } from "../remote/lock";
import { fingerprintOf } from "../ssh/hostkey";
import type { GuestInputs, GuestSettings } from "./args";
import { INSTALL_MARKER } from "./paths";
import { guestFstab, guestGrubConfig, guestInterfaces, guestResolvConf } from "./render";

/** Packages every debootstrapped guest gets: enough to boot unattended, configure its network and be reached. */
export const DEBOOTSTRAP_BASE = [
  "systemd-sysv",
  "udev",
  "kmod",
  "ifupdown",
  "iproute2",
  "iputils-ping",
  "openssh-server",
];

/** The settings of a guest with an install, else null (a guest without one owns its settings). */
export function guestSettingsOf(
  g: Pick<GuestInputs, "name" | "install" | "guestNetwork">,
): GuestSettings | null {
  if (!g.install) return null;
  return {
    hostname: g.name,
    ...g.guestNetwork,
    nameservers: g.install.nameservers,
    authorizedKeys: g.install.authorizedKeys,
  };
}

/** The kernel release of a direct-boot kernel named like Debian's `/boot/vmlinuz-<release>`, else null. */
export function directKernelRelease(g: Pick<GuestInputs, "boot">): string | null {
  if (g.boot.kind !== "direct") return null;
  const m = /^\/boot\/vmlinuz-([A-Za-z0-9._+-]+)$/.exec(g.boot.kernel);
  return m ? m[1]! : null;
}

/**
 * Shell functions that write inside the guest's filesystem mounted at `$mnt`:
 * - `xe_put MODE PATH` writes stdin to `$mnt/PATH` atomically; a replaced file is kept under
 *   `$mnt/var/backups/xen-estate/PATH.<date>` (only with `xe_keep=1`); refuses a path that a symlink leads out of
 *   the guest's filesystem.
 */
const GUEST_FS_FUNCTIONS = [
  `xe_inside() { case "$(realpath -m -- "$mnt$1")" in "$mnt"/*) return 0 ;; *) return 1 ;; esac; }`,
  `xe_put() {`,
  `  local mode=$1 rel=$2 dir tmp`,
  `  xe_inside "$rel" || xe_refuse "refusing to write $rel in the guest: a symlink leads out of its filesystem"`,
  `  dir=$(dirname -- "$mnt$rel")`,
  `  mkdir -p -- "$dir"`,
  `  xe_inside "$rel" || xe_refuse "refusing to write $rel in the guest: a symlink leads out of its filesystem"`,
  `  if [ "\${xe_keep:-0}" = 1 ] && [ -f "$mnt$rel" ] && [ ! -L "$mnt$rel" ]; then`,
  `    xe_inside "/var/backups/xen-estate$rel" || xe_refuse "refusing to back up $rel in the guest: a symlink leads out of its filesystem"`,
  `    mkdir -p -m 700 -- "$(dirname -- "$mnt/var/backups/xen-estate$rel")"`,
  `    cp -p -- "$mnt$rel" "$mnt/var/backups/xen-estate$rel.$(date -u +%Y%m%dT%H%M%SZ)"`,
  `  fi`,
  `  tmp=$(mktemp -- "$dir/.xen-estate.XXXXXX")`,
  `  cat > "$tmp"; chmod "$mode" "$tmp"; chown 0:0 "$tmp"`,
  `  rm -rf -- "$mnt$rel"; mv -f -- "$tmp" "$mnt$rel"`,
  `}`,
].join("\n");

/** `xe_put` of a fixed content. */
function put(path: string, content: string, mode = "644"): string {
  return `printf '%s' ${shellQuote(content)} | xe_put ${mode} ${shellQuote(path)}`;
}

/** The lines that write a guest's settings into `$mnt`. */
function settingsLines(s: GuestSettings): string[] {
  return [
    put("/etc/hostname", `${s.hostname}\n`),
    put("/etc/network/interfaces", guestInterfaces(s)),
    put("/etc/resolv.conf", guestResolvConf(s.nameservers)),
    ...(s.authorizedKeys.length > 0
      ? [
          `xe_inside /root/.ssh || xe_refuse "refusing to write /root/.ssh in the guest: a symlink leads out of its filesystem"`,
          `install -d -m 700 -- "$mnt/root/.ssh"`,
          put("/root/.ssh/authorized_keys", s.authorizedKeys.join("\n") + "\n", "600"),
        ]
      : []),
  ];
}

/**
 * Mounts the guest's root disk at `$mnt` (unmounted again when the script ends), after refusing a disk that a
 * guest holds or the host has mounted, under the disk's own lock.
 */
function withRootMounted(g: GuestInputs, body: string[]): string {
  const root = g.disks[0]!;
  const dev = shellQuote(root.path);
  return withHostLock(
    [
      DEVICE_HOLDER_FUNCTIONS,
      GUEST_FS_FUNCTIONS,
      `[ -b ${dev} ] || xe_refuse ${shellQuote(`${root.path} is not a block device on `)} "$(hostname)"`,
      `xe_holder ${dev}`,
      `if [ -n "$holder" ]; then xe_refuse ${shellQuote(`refusing to touch ${root.path}: guest `)} "$holder" ${shellQuote(" holds it")}; fi`,
      `xe_mounted ${dev}`,
      `if [ -n "$mounted" ]; then xe_refuse ${shellQuote(`refusing to touch ${root.path}: it is mounted at `)} "$mounted"; fi`,
      `rc=0; fs=$(blkid -p -o value -s TYPE -- ${dev}) || rc=$?`,
      `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say ${shellQuote(`blkid cannot read ${root.path}`)}; exit 1; }`,
      `if [ "$fs" != ext4 ]; then xe_refuse ${shellQuote(`the guest's root disk must hold ext4; ${root.path} holds `)} "\${fs:-nothing}"; fi`,
      `mnt=$(mktemp -d /run/xen-estate-install.XXXXXX)`,
      `xe_unmount() { [ -z "$mnt" ] || { umount -- "$mnt" 2>/dev/null; rmdir -- "$mnt" 2>/dev/null; }; mnt=; }`,
      `trap xe_unmount EXIT`,
      `mount -- ${dev} "$mnt"`,
      ...body,
      `sync`,
      // Unmounted before the disk's lock goes: the next install of this disk, waiting for the lock, must not find it
      // still mounted here and refuse it.
      `umount -- "$mnt"`,
      `rmdir -- "$mnt"`,
      `mnt=`,
    ].join("\n"),
    3600,
    deviceLock(root.path),
    7,
  );
}

/**
 * Installs a fresh root filesystem onto the first disk, from an image or by debootstrap, then writes the
 * guest's own settings. Never touches a disk that holds files; an install interrupted earlier (marker present) is
 * wiped and run again. `swapVdevs` are the guest's disks that hold swap, listed in the fstab of a debootstrapped
 * guest. Prints `hostkey <type> <base64>` when the guest has an SSH host key.
 */
export function installScript(g: GuestInputs, swapVdevs: readonly string[] = []): string {
  const inst = g.install;
  const settings = g.guestSettings ?? guestSettingsOf(g);
  if (!inst || !settings) return "";
  const root = g.disks[0]!;
  const release = directKernelRelease(g);
  const body: string[] = [];
  if (inst.image !== null) {
    const image = shellQuote(inst.image);
    body.push(
      `[ -f ${image} ] || xe_refuse ${shellQuote(`image ${inst.image} not found on `)} "$(hostname)"`,
      `xe_say ${shellQuote(`unpacking ${inst.image}`)}`,
      `tar -x --numeric-owner -C "$mnt" -f ${image}`,
      // An image is shared by many guests: each gets its own SSH host keys and machine id.
      `if [ -d "$mnt/etc/ssh" ]; then rm -f "$mnt"/etc/ssh/ssh_host_*; ssh-keygen -q -A -f "$mnt"; fi`,
      `if [ -e "$mnt/etc/machine-id" ]; then : > "$mnt/etc/machine-id"; fi`,
      // A bootloader guest needs a GRUB menu; an image that brings its own keeps it.
      ...(g.boot.kind === "direct"
        ? []
        : [`[ -e "$mnt/boot/grub/grub.cfg" ] || { ${put("/boot/grub/grub.cfg", guestGrubConfig(g))}; }`]),
    );
  } else {
    const d = inst.debootstrap;
    const packages = [
      ...DEBOOTSTRAP_BASE,
      ...(g.boot.kind === "direct" ? [] : ["linux-image-amd64"]),
      ...d.include,
    ];
    const mirrorHost = /^https?:\/\/([^/:]+)/.exec(d.mirror)?.[1] ?? "";
    const wgetrc = [
      ...(d.mirrorUser ? [`http_user = ${d.mirrorUser}`, `http_password = ${d.mirrorPassword ?? ""}`] : []),
      ...(d.proxyUser ? [`proxy_user = ${d.proxyUser}`, `proxy_password = ${d.proxyPassword ?? ""}`] : []),
    ];
    body.push(
      `command -v debootstrap >/dev/null || xe_refuse "debootstrap is not installed on $(hostname): apt-get install debootstrap"`,
      `[ -e /usr/share/debootstrap/scripts/${shellQuote(d.suite)} ] || xe_refuse "the debootstrap on $(hostname) does not know the suite " ${shellQuote(d.suite)} ": upgrade it or pick another suite"`,
      // Credentials reach wget through a file of mode 600 (WGETRC), never a command line or a log.
      ...(wgetrc.length > 0
        ? [
            `auth=$(mktemp -d /run/xen-estate-auth.XXXXXX); chmod 700 "$auth"`,
            `trap 'xe_unmount; rm -rf -- "$auth"' EXIT`,
            `printf '%s\\n' ${wgetrc.map(shellQuote).join(" ")} > "$auth/wgetrc"; chmod 600 "$auth/wgetrc"`,
            `export WGETRC="$auth/wgetrc"`,
          ]
        : []),
      ...(d.proxy ? [`export http_proxy=${shellQuote(d.proxy)} https_proxy=${shellQuote(d.proxy)}`] : []),
      `xe_say ${shellQuote(`debootstrap ${d.suite} from ${d.mirror}`)}`,
      // Every line goes to stderr: the provider turns them into progress and keeps the tail for errors. (debootstrap
      // takes no `--`; the suite, checked to start with a letter, cannot pass for an option.)
      `debootstrap --arch=amd64 --variant=${shellQuote(d.variant)} --include=${shellQuote(packages.join(","))} ${shellQuote(d.suite)} "$mnt" ${shellQuote(d.mirror)} >&2`,
      `rm -rf "$mnt"/var/cache/apt/archives/*.deb`,
      put("/etc/fstab", guestFstab(g, swapVdevs)),
      ...(d.mirrorUser
        ? [
            put(
              "/etc/apt/auth.conf.d/xen-estate.conf",
              `machine ${mirrorHost} login ${d.mirrorUser} password ${d.mirrorPassword ?? ""}\n`,
              "600",
            ),
          ]
        : []),
      ...(d.proxy
        ? [
            put(
              "/etc/apt/apt.conf.d/01xen-estate-proxy",
              `Acquire::http::Proxy "${d.proxyUser ? d.proxy.replace("://", `://${encodeURIComponent(d.proxyUser)}:${encodeURIComponent(d.proxyPassword ?? "")}@`) : d.proxy}";\n`,
              d.proxyUser ? "600" : "644",
            ),
          ]
        : []),
      ...(g.boot.kind === "direct" ? [] : [put("/boot/grub/grub.cfg", guestGrubConfig(g))]),
    );
    if (release) {
      // The guest boots the dom0's kernel: give it that kernel's Xen front-end drivers.
      const mods = shellQuote(`/lib/modules/${release}`);
      body.push(
        `if [ -d ${mods} ]; then`,
        `  find ${mods} -name 'xen-*front.ko*' | while read -r m; do install -D -m 644 -- "$m" "$mnt$m"; done`,
        `  for f in modules.order modules.builtin modules.builtin.modinfo; do [ ! -f ${mods}/$f ] || install -D -m 644 -- ${mods}/$f "$mnt"${mods}/$f; done`,
        `  depmod -b "$mnt" ${shellQuote(release)}`,
        `  printf 'xen-netfront\\nxen-blkfront\\n' >> "$mnt/etc/modules"`,
        `fi`,
      );
    }
  }
  return withRootMounted(g, [
    `hostkey() { if [ -f "$mnt/etc/ssh/ssh_host_ed25519_key.pub" ]; then echo "hostkey $(cut -d' ' -f1-2 "$mnt/etc/ssh/ssh_host_ed25519_key.pub")"; fi; }`,
    `if [ -e "$mnt/${INSTALL_MARKER}" ]; then`,
    `  xe_say ${shellQuote(`an earlier install onto ${root.path} did not finish: wiping it and starting again`)}`,
    `  find "$mnt" -mindepth 1 -maxdepth 1 ! -name lost+found ! -name ${INSTALL_MARKER} -exec rm -rf {} +`,
    `elif [ -e "$mnt/etc/os-release" ] || [ -L "$mnt/sbin/init" ] || [ -e "$mnt/sbin/init" ]; then`,
    `  xe_say "already installed"; hostkey; exit 0`,
    `elif [ -n "$(ls -A "$mnt" | grep -vx lost+found)" ]; then`,
    `  xe_refuse ${shellQuote(`refusing to install onto ${root.path}: it already holds files`)}`,
    `fi`,
    `: > "$mnt/${INSTALL_MARKER}"`,
    ...body,
    ...settingsLines(settings),
    `rm -f "$mnt/${INSTALL_MARKER}"`,
    `sync`,
    `hostkey`,
    `xe_say installed`,
  ]);
}

/**
 * Rewrites the settings an install wrote (hostname, network, resolvers, SSH keys) inside a stopped guest's root
 * filesystem, keeping each replaced file under /var/backups/xen-estate inside the guest.
 */
export function settingsScript(g: GuestInputs): string {
  const settings = g.guestSettings ?? guestSettingsOf(g);
  if (!settings) return "";
  return withRootMounted(g, [
    `[ -e "$mnt/etc/os-release" ] || [ -e "$mnt/sbin/init" ] || [ -L "$mnt/sbin/init" ] || xe_refuse ${shellQuote(`${g.disks[0]!.path} holds no installed system to reconfigure`)}`,
    `xe_keep=1`,
    ...settingsLines(settings),
    `xe_say ${shellQuote(`rewrote the settings of ${g.name}`)}`,
  ]);
}

/** Turns debootstrap's `I: Retrieving …` lines into a progress line with counts and, once known, a percent. */
export class DebootstrapProgress {
  private retrieved = 0;
  private stage = "resolving";
  private done = 0;
  private readonly started = Date.now();

  /** Returns a progress message for this line, or null when the line says nothing new. */
  line(text: string): string | null {
    const m =
      /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring|Installing|Base system installed)/.exec(
        text,
      );
    if (!m) return null;
    const verb = m[1]!;
    if (verb === "Retrieving") {
      this.retrieved++;
      return this.message("downloading", `${this.retrieved} packages`);
    }
    if (verb === "Base system installed") return this.message("finished", `${this.retrieved} packages`);
    if (verb === "Installing") {
      this.stage = "installing";
      this.done = 0;
      return this.message("installing", "");
    }
    const stage = verb.toLowerCase();
    if (stage !== this.stage) {
      this.stage = stage;
      this.done = 0;
    }
    this.done++;
    const total = Math.max(this.retrieved, this.done);
    return this.message(stage, `${this.done}/${total} (${Math.floor((100 * this.done) / total)}%)`);
  }

  private message(stage: string, detail: string): string {
    const s = Math.round((Date.now() - this.started) / 1000);
    return `debootstrap: ${stage}${detail ? ` ${detail}` : ""}, ${s} s`;
  }
}

/**
 * The install as the outputs record it: the mirror's and the proxy's passwords as their digests, never the passwords
 * (core/secrets.ts says why); the inputs keep them for the install. A recorded install stays as it is.
 */
export function recordedInstall<T extends Pick<GuestInputs, "install">>(g: T): T["install"] {
  const d = g.install?.debootstrap;
  if (!g.install || !d) return g.install;
  const mark = (v: string | null): string | null => (v ? recordedSecret(v) : v);
  return {
    ...g.install,
    debootstrap: { ...d, mirrorPassword: mark(d.mirrorPassword), proxyPassword: mark(d.proxyPassword) },
  };
}

/** The secrets of an install (mirror and proxy passwords), for redaction. */
export function installSecrets(g: Pick<GuestInputs, "install">): string[] {
  const d = g.install?.debootstrap;
  return d ? [d.mirrorPassword, d.proxyPassword].filter((s): s is string => !!s) : [];
}

/** Runs the install with its progress in Pulumi's output; returns the guest's SSH host key fingerprint. */
export async function installGuest(ctx: Context, g: GuestInputs): Promise<string | null> {
  if (!g.install) return null;
  const source = g.install.image ?? `${g.install.debootstrap.suite} from ${g.install.debootstrap.mirror}`;
  ctx.log.info(`installing ${g.name}: ${source}`);
  const tracker = new DebootstrapProgress();
  let last = 0;
  const swapVdevs: string[] = [];
  for (const d of g.install.debootstrap ? g.disks.slice(1) : []) {
    const r = await ctx.host.script(
      `rc=0; t=$(blkid -p -o value -s TYPE -- ${shellQuote(d.path)}) || rc=$?; [ "$rc" = 0 ] || [ "$rc" = 2 ] || exit 1; printf '%s\\n' "$t"`,
      { summary: `blkid ${d.path}` },
    );
    if (r.stdout.trim() === "swap") swapVdevs.push(d.vdev);
  }
  const out = await ctx.host.refusable(installScript(g, swapVdevs), {
    summary: `install ${g.name} (${source})`,
    secrets: installSecrets(g),
    // debootstrap under load or emulation takes tens of minutes.
    timeoutMs: 3_600_000,
    onStderrLine: (line) => {
      const msg = tracker.line(line);
      if (msg && (Date.now() - last > 2000 || msg.includes("finished"))) {
        last = Date.now();
        ctx.log.progress(`${g.name}: ${msg}`);
      }
    },
  });
  const key = /^hostkey (\S+) ([A-Za-z0-9+/=]+)$/m.exec(out);
  return key ? fingerprintOf(Buffer.from(key[2]!, "base64")) : null;
}

/** Rewrites a stopped guest's installed settings (see {@link settingsScript}). */
export async function reconfigureGuest(ctx: Context, g: GuestInputs): Promise<void> {
  ctx.log.info(`rewriting ${g.name}'s network, resolvers and SSH keys inside its filesystem`);
  await ctx.host.refusable(settingsScript(g), { summary: `reconfigure ${g.name}` });
}
