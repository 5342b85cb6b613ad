/**
 * Dom0Access' pure planning: the admin user's files, the sshd drop-in, how sshd picks the change up, and the
 * lockout analysis `check` can do offline.
 */
import { shellQuote } from "../../core/shell";
import { render } from "../../core/templates";
import { parseAuthorizedKey, publicKeyOf } from "../../dom0/keys";

/** Read before the distribution's own drop-ins and the main file: the first value sshd reads wins. */
export const SSHD_DROP_IN = "/etc/ssh/sshd_config.d/00-xen-estate.conf";

export function sudoersPath(user: string): string {
  return `/etc/sudoers.d/xen-estate-${user}`;
}

export function authorizedKeysPath(user: string): string {
  return `/home/${user}/.ssh/authorized_keys`;
}

export interface AccessPlan {
  adminUser: string;
  authorizedKeys: string[];
  sshPort: number;
}

export function renderSshdDropIn(p: AccessPlan): string {
  return render("dom0-access/sshd.conf", { port: p.sshPort });
}

export function renderSudoers(p: AccessPlan): string {
  return render("dom0-access/sudoers", { user: p.adminUser });
}

export function renderAuthorizedKeys(p: AccessPlan): string {
  return render("dom0-access/authorized_keys", { user: p.adminUser, keys: p.authorizedKeys });
}

/**
 * Shell that validates sshd's whole configuration with the drop-in in place (`sshd -t`), checks that the
 * effective settings are the declared ones (another file's `Port` adds a port; an earlier `PermitRootLogin` wins),
 * and then makes sshd use them without dropping a session: reload on Debian, the socket restarted after
 * `daemon-reload` on Ubuntu 24.04, where the port lives in ssh.socket (generated from sshd_config).
 */
export function sshdActivateScript(p: { sshPort: number; socketActivated: boolean }): string {
  return [
    ...SSHD_VALIDATE,
    `eff=$(sshd -T -C user=root,host=localhost,addr=127.0.0.1 2>/dev/null || sshd -T)`,
    `ports=$(printf '%s\\n' "$eff" | awk '$1 == "port" {print $2}' | sort -u | paste -sd' ')`,
    `[ "$ports" = ${shellQuote(String(p.sshPort))} ] || { echo "sshd would listen on port(s) $ports, not ${p.sshPort} only: another file under /etc/ssh sets Port" >&2; exit 1; }`,
    `for kv in "permitrootlogin no" "passwordauthentication no" "x11forwarding no"; do`,
    // A here-string, not a pipe: under pipefail, grep -q leaving early kills printf with SIGPIPE on sshd -T's
    // 4 KB and the pipeline fails although the line is there.
    `  grep -qx -- "$kv" <<<"$eff" || { echo "sshd's effective setting is not '$kv': an earlier file under /etc/ssh sets it" >&2; exit 1; }`,
    `done`,
    ...sshdReload(p),
  ].join("\n");
}

/**
 * Shell that makes sshd use whatever /etc/ssh holds now, checking only that it parses (`sshd -t`): what the host
 * runs by itself after it put the previous drop-in back (the declared port's check above would fail there and
 * leave sshd on the port that cut the path).
 */
export function sshdReloadScript(p: { socketActivated: boolean }): string {
  return [...SSHD_VALIDATE, ...sshdReload(p)].join("\n");
}

/** sshd's privilege-separation directory (gone after a reboot without the service) and its own config check. */
const SSHD_VALIDATE = [`mkdir -p /run/sshd`, `sshd -t`];

function sshdReload(p: { socketActivated: boolean }): string[] {
  return [
    ...(p.socketActivated
      ? [
          `if systemctl is-enabled --quiet ssh.socket 2>/dev/null; then`,
          `  systemctl daemon-reload`,
          `  systemctl restart ssh.socket`,
          `else`,
          `  systemctl reload ssh.service`,
          `fi`,
        ]
      : [
          `if [ -d /run/systemd/system ]; then systemctl reload ssh.service || systemctl reload sshd.service`,
          `else kill -HUP "$(cat /run/sshd.pid)"; fi`,
        ]),
  ];
}

/**
 * Makes the admin user (in group sudo, with a home and bash) unless it exists, and its ~/.ssh. Prints
 * `created` or `exists`. Its password is `*`, as `adduser --disabled-password` makes it: no password opens it, and the
 * account is not locked (useradd's default `!` is, and an sshd without PAM refuses a locked account's keys too). Installs sudo first when it is missing.
 */
export function userScript(user: string): string {
  const u = shellQuote(user);
  return [
    `if ! command -v sudo >/dev/null; then`,
    `  export DEBIAN_FRONTEND=noninteractive`,
    `  apt-get -q -y -o DPkg::Lock::Timeout=600 update >&2`,
    `  apt-get -q -y -o DPkg::Lock::Timeout=600 install sudo >&2`,
    `fi`,
    `if id -u -- ${u} >/dev/null 2>&1; then echo exists; else useradd -m -s /bin/bash -G sudo -p '*' -- ${u}; echo created; fi`,
    `home=$(getent passwd -- ${u} | cut -d: -f6)`,
    `[ "$home" = ${shellQuote(`/home/${user}`)} ] || xe_refuse ${shellQuote(`${user}'s home is not /home/${user}: refusing to manage its keys elsewhere`)}`,
    `install -d -m 700 -o ${u} -g ${u} -- "$home/.ssh"`,
  ].join("\n");
}

/** Prints `present`/`absent` for the admin user and its sudo group membership. */
export function userProbeScript(user: string): string {
  const u = shellQuote(user);
  return `if id -u -- ${u} >/dev/null 2>&1; then echo "user present"; else echo "user absent"; fi`;
}

export interface LockoutInput {
  connectionUser: string;
  privateKey?: string;
  passphrase?: string;
  adminUser: string;
  authorizedKeys: string[];
}

/**
 * What `check` can tell offline about a lockout: once sshd is hardened the provider logs in as the admin with the
 * connection's key, so that key must be one of the admin's. Returns the problem, or undefined (also when the key
 * is not known offline: an agent, a key file; then the confirmation after the change decides).
 */
export function lockoutProblem(i: LockoutInput): string | undefined {
  if (!i.privateKey) return undefined;
  const pub = publicKeyOf(i.privateKey, i.passphrase);
  if (!pub) return undefined;
  const listed = i.authorizedKeys.some((k) => {
    const parsed = parseAuthorizedKey(k);
    return !("error" in parsed) && `${parsed.type} ${parsed.key}` === pub;
  });
  if (listed) return undefined;
  return `must include the public key of the connection's privateKey (${pub.slice(0, 40)}…): after the change root may not log in and xen-estate logs in as the admin with that key`;
}
