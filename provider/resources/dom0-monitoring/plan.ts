/** Dom0Monitoring's pure planning: the mail relay, aliases, smartd's schedule and relatime on /. */
import { render } from "../../core/templates";

export const DMA_CONF = "/etc/dma/dma.conf";
export const ALIASES = "/etc/aliases";
export const SMARTD_CONF = "/etc/smartd.conf";

export interface MonitoringPlan {
  mailTo: string;
  relayHost: string;
  relayPort: number;
  starttls: boolean;
  mailName: string;
  /** Local accounts whose mail goes to `mailTo`. */
  users: string[];
  smartDisks: { device: string; schedule: string }[];
}

/** smartd's default schedule: a short self-test daily at 02:00, a long one on Saturdays at 03:00. */
export const DEFAULT_SMART_SCHEDULE = "(S/../.././02|L/../../6/03)";

export function renderMonitoringFiles(p: MonitoringPlan): Record<string, string> {
  return {
    [DMA_CONF]: render("dom0-monitoring/dma.conf", {
      relayHost: p.relayHost,
      relayPort: p.relayPort,
      starttls: p.starttls,
      mailName: p.mailName,
      mailTo: p.mailTo,
      authPath: null,
    }),
    [ALIASES]: render("dom0-monitoring/aliases", { users: p.users, mailTo: p.mailTo }),
    ...(p.smartDisks.length > 0
      ? { [SMARTD_CONF]: render("dom0-monitoring/smartd.conf", { disks: p.smartDisks }) }
      : {}),
  };
}

/**
 * Relatime on the root filesystem: an fstab whose `/` line asks for `strictatime` (an atime write on every read)
 * gets `relatime` instead. Returns the new fstab, or null when nothing needs to change. Pure.
 */
export function relatimeFstab(fstab: string): string | null {
  let changed = false;
  const lines = fstab.split("\n").map((line) => {
    if (/^\s*#/.test(line)) return line;
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || f[1] !== "/") return line;
    const opts = f[3]!.split(",");
    if (!opts.includes("strictatime") && !opts.includes("atime")) return line;
    changed = true;
    const next = opts.filter((o) => o !== "strictatime" && o !== "atime");
    if (!next.includes("relatime") && !next.includes("noatime")) next.push("relatime");
    f[3] = next.join(",");
    return f.join("\t");
  });
  return changed ? lines.join("\n") : null;
}

/**
 * Prints facts refresh compares: `mailaddr VALUE` from mdadm.conf (mdadm mails that address when an array
 * degrades), the root filesystem's atime mode, and `arrays N`.
 */
export const PROBE_SCRIPT = [
  `m=$(awk '$1 == "MAILADDR" {print $2; exit}' /etc/mdadm/mdadm.conf 2>/dev/null || true)`,
  `echo "mailaddr \${m:-none}"`,
  `o=$(findmnt -no OPTIONS /)`,
  `case ",$o," in *,noatime,*) echo "atime noatime" ;; *,strictatime,*) echo "atime strictatime" ;; *) echo "atime relatime" ;; esac`,
  `echo "arrays $(grep -c '^md[0-9]' /proc/mdstat 2>/dev/null || echo 0)"`,
].join("\n");

/**
 * mdadm mails MAILADDR when an array degrades; Debian's mdadm.conf says `MAILADDR root`, which the aliases send
 * on. A file without MAILADDR gets that line (the rest of the file, its ARRAY lines above all, is left alone).
 */
export const MDADM_MAILADDR_SCRIPT = [
  `if [ -f /etc/mdadm/mdadm.conf ] && ! grep -q '^MAILADDR' /etc/mdadm/mdadm.conf; then`,
  `  printf '\\n# added by xen-estate: mail for degraded arrays goes to root, aliased to the operator\\nMAILADDR root\\n' >> /etc/mdadm/mdadm.conf`,
  `fi`,
].join("\n");

/** Where Dom0Monitoring keeps what it records on the host. */
export const MONITORING_STATE = "/var/lib/xen-estate/monitoring";
/** Where the host records the smartd.conf smartd last started with (its SHA-256). */
export const SMARTD_APPLIED = `${MONITORING_STATE}/smartd.conf.sha256`;

/**
 * Restarts smartd when the smartd.conf it last started with (recorded on the host) is not the one on disk, and
 * records the new one after the restart. Keyed on the host's record, not on whether this run wrote the file: a run
 * cut between writing the schedule and restarting smartd leaves the next run a file it finds unchanged, and smartd
 * still on the old schedule.
 */
export const SMARTD_RESTART_SCRIPT = [
  `want=$(sha256sum < ${SMARTD_CONF} | cut -d' ' -f1)`,
  `if [ "$(cat ${SMARTD_APPLIED} 2>/dev/null || true)" != "$want" ]; then`,
  `  systemctl enable --quiet smartmontools.service 2>/dev/null || true`,
  `  systemctl restart smartmontools.service`,
  `  mkdir -p -m 755 ${MONITORING_STATE}`,
  `  printf '%s\\n' "$want" > ${SMARTD_APPLIED}.tmp && mv -f -- ${SMARTD_APPLIED}.tmp ${SMARTD_APPLIED}`,
  `fi`,
].join("\n");

/**
 * After `onDelete: "restore"` put the original smartd.conf back: restarts a running smartd when the schedule it last
 * started with (the host's record) is not the file on disk, then drops the record (and the state directory when
 * nothing else is in it). Keyed on the record like {@link SMARTD_RESTART_SCRIPT}, so a delete cut between the
 * restore and the restart restarts on its retry; a smartd the operator stopped stays stopped.
 */
export const SMARTD_RESTORED_SCRIPT = [
  `if [ -f ${SMARTD_CONF} ]; then want=$(sha256sum < ${SMARTD_CONF} | cut -d' ' -f1); else want=absent; fi`,
  `if [ -f ${SMARTD_APPLIED} ] && [ "$(cat ${SMARTD_APPLIED})" != "$want" ]; then`,
  `  systemctl try-restart smartmontools.service`,
  `fi`,
  `rm -f -- ${SMARTD_APPLIED}`,
  `if [ -d ${MONITORING_STATE} ]; then rmdir --ignore-fail-on-non-empty -- ${MONITORING_STATE}; fi`,
].join("\n");

/**
 * Remounts `/` relatime when it runs strictatime now (the fstab says relatime from the next boot on). Keyed on the
 * live mount, not on whether this run changed the fstab: a run cut between the two leaves the next one an fstab
 * it finds right, and `/` still strictatime.
 */
export const RELATIME_REMOUNT_SCRIPT = [
  `case ",$(findmnt -no OPTIONS /)," in`,
  `  *,strictatime,*) mount -o remount,relatime / ;;`,
  `esac`,
].join("\n");
