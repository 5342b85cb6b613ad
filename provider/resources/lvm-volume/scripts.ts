/**
 * LvmVolume's remote scripts: pure functions from inputs to bash, every value quoted (messages included).
 *
 * The probe says "absent" only when LVM answered and the volume is not there; when LVM cannot answer (a lock
 * timeout, a missing PV) the probe fails. Nothing that could hurt a disk in use (fsck, resize, relabel, removal)
 * runs while a guest, a mount or swap holds the volume.
 */
import { shellQuote } from "../../core/shell";
import { DEVICE_HOLDER_FUNCTIONS } from "../../remote/devices";
import type { LvmVolumeInputs, LvmVolumeOutputs } from "./kind";

/** Marker lines of the probe's output. */
const ABSENT = "XE-ABSENT";

/**
 * Sets `$present` to 1 when VG/LV exists, 0 when LVM says it does not; fails when LVM cannot tell. A volume group
 * that does not exist holds no volume.
 */
function lvExists(vg: string, lv: string): string {
  const q = shellQuote(vg);
  return [
    `present=0`,
    `if ! vgs_out=$(vgs --noheadings -o vg_name 2>&1); then xe_say "cannot list volume groups: " "$vgs_out"; exit 1; fi`,
    `if printf '%s\\n' "$vgs_out" | tr -d ' ' | grep -qxF -- ${q}; then`,
    `  if ! lvs_out=$(lvs --noheadings -o lv_name -- ${q} 2>&1); then xe_say ${shellQuote(`cannot list the volumes of ${vg}: `)} "$lvs_out"; exit 1; fi`,
    `  if printf '%s\\n' "$lvs_out" | tr -d ' ' | grep -qxF -- ${shellQuote(lv)}; then present=1; fi`,
    `fi`,
  ].join("\n");
}

/** Prints the LV's state between markers: size, extent size and the probed signature. */
export function probeScript(vg: string, lv: string): string {
  const q = shellQuote(`${vg}/${lv}`);
  return [
    lvExists(vg, lv),
    `if [ "$present" = 0 ]; then echo ${ABSENT}; exit 0; fi`,
    // --yes: activating a snapshot asks first whether its origin may change too (seen in the lab).
    `lvchange --yes -ay ${q} >/dev/null`,
    // The origin (empty for a volume of its own) last: lv_size of a snapshot is its copy-on-write space.
    `echo XE-LV $(lvs --noheadings --units b --nosuffix -o lv_size,vg_extent_size,origin ${q})`,
    `udevadm settle 2>/dev/null || true`,
    // blkid -p exits 2 when the device holds no signature at all: that is an answer, not a failure.
    `rc=0; sig=$(blkid -p -o export ${shellQuote(`/dev/${vg}/${lv}`)}) || rc=$?`,
    `if [ "$rc" != 0 ] && [ "$rc" != 2 ]; then xe_say ${shellQuote(`blkid cannot read /dev/${vg}/${lv}`)}; exit 1; fi`,
    `[ -z "$sig" ] || printf '%s\\n' "$sig" | sed 's/^/XE-FS /'`,
  ].join("\n");
}

export interface Probe {
  allocatedBytes: number;
  extentBytes: number;
  fsType: string | null;
  uuid: string | null;
  label: string | null;
  /** The LV this one is a snapshot of, or null. */
  origin: string | null;
}

/** Reads the probe's output: the state, or null when the volume is absent. An unreadable answer throws. */
export function parseProbe(stdout: string): Probe | null {
  const lines = stdout.split("\n");
  if (lines.some((l) => l.trim() === ABSENT)) return null;
  const lv = lines.find((l) => l.startsWith("XE-LV "));
  if (!lv)
    throw new Error(`the volume probe gave no answer (output: ${JSON.stringify(stdout.slice(0, 200))})`);
  const [sizeText, extentText, origin] = lv.slice(6).trim().split(/\s+/);
  const size = Number(sizeText);
  const extent = Number(extentText);
  if (!size || !extent) throw new Error(`the volume probe gave an unreadable size: ${JSON.stringify(lv)}`);
  const fs: Record<string, string> = {};
  for (const l of lines.filter((x) => x.startsWith("XE-FS "))) {
    const [k, ...v] = l.slice(6).split("=");
    if (k) fs[k] = v.join("=");
  }
  return {
    allocatedBytes: size,
    extentBytes: extent,
    fsType: fs.TYPE ?? (fs.PTTYPE ? `partition table (${fs.PTTYPE})` : null),
    uuid: fs.UUID ?? null,
    label: fs.LABEL ?? null,
    origin: origin || null,
  };
}

function expectedType(i: Pick<LvmVolumeInputs, "filesystem">): string {
  return i.filesystem === "none" ? "" : i.filesystem;
}

function mkfsCommand(i: LvmVolumeInputs, dev: string): string {
  const label = i.label ? ["-L", i.label] : [];
  const args = [...label, ...i.mkfsOptions].map(shellQuote).join(" ");
  if (i.filesystem === "ext4") return `mkfs.ext4 -q ${args} -- ${dev}`;
  return `mkswap ${args} -- ${dev}`;
}

/** Refuses (exit via xe_refuse) when a guest, a mount in the host or swap holds `$real`, naming who. */
function refuseWhenHeld(name: string, what: string): string[] {
  return [
    `xe_holder "$real"`,
    `if [ -n "$holder" ]; then xe_refuse ${shellQuote(`refusing to ${what} ${name}: guest `)} "$holder" ${shellQuote(" uses it; shut the guest down first")}; fi`,
    `xe_mounted "$real"`,
    `if [ -n "$mounted" ]; then xe_refuse ${shellQuote(`refusing to ${what} ${name}: it is mounted at `)} "$mounted"; fi`,
    `if xe_swapping "$real"; then xe_refuse ${shellQuote(`refusing to ${what} ${name}: it is active swap`)}; fi`,
  ];
}

/**
 * The LVM tag a create puts on the volume it makes, until the kind has recorded the volume (then
 * {@link confirmCreatedScript} takes it off). A volume that carries it was made by a create whose answer was lost
 * (a cut connection): the next create finishes it as its own instead of refusing it as someone else's.
 */
export const CREATING_TAG = "xen_estate_creating";

/** Opens an `if` that is true when VG/LV (which exists) carries {@link CREATING_TAG}; the caller closes it. */
function madeByLostCreate(name: string): string[] {
  return [
    `  tags=$(lvs --noheadings -o lv_tags -- ${shellQuote(name)} | tr -d ' ')`,
    `  if [ "\${tags/${CREATING_TAG}/}" != "$tags" ]; then`,
    `    xe_say ${shellQuote(`${name} was made by a create whose answer was lost: finishing that create`)}`,
  ];
}

/** Takes {@link CREATING_TAG} off VG/LV when it carries it (a volume that is gone is left to the caller). */
export function confirmCreatedScript(vg: string, lv: string): string {
  const q = shellQuote(`${vg}/${lv}`);
  return [
    `tags=$(lvs --noheadings -o lv_tags -- ${q} | tr -d ' ')`,
    // --yes: on a snapshot LVM asks first whether the change may apply to its origin too (seen in the lab: without a
    // terminal the answer is no, exit 5); a tag the origin does not carry changes nothing there.
    `if [ "\${tags/${CREATING_TAG}/}" != "$tags" ]; then lvchange --yes --deltag ${CREATING_TAG} -- ${q} >&2; fi`,
  ].join("\n");
}

export function createScript(i: LvmVolumeInputs): string {
  if (i.snapshotOf) return createSnapshotScript(i, i.snapshotOf);
  const name = `${i.volumeGroup}/${i.name}`;
  const vg = shellQuote(i.volumeGroup);
  const lvq = shellQuote(name);
  const dev = shellQuote(`/dev/${name}`);
  const want = expectedType(i);
  return [
    DEVICE_HOLDER_FUNCTIONS,
    `if ! vgs -- ${vg} >/dev/null 2>&1; then xe_refuse ${shellQuote(`volume group ${i.volumeGroup} does not exist on `)} "$(hostname)" " (volume groups there: $(vgs --noheadings -o vg_name 2>/dev/null | xargs))"; fi`,
    lvExists(i.volumeGroup, i.name),
    `adopted=0`,
    `if [ "$present" = 1 ]; then`,
    ...madeByLostCreate(name),
    i.adopt
      ? `  else xe_say ${shellQuote(`adopting the existing ${name}`)}; adopted=1; fi`
      : `  else xe_refuse ${shellQuote(`logical volume ${name} already exists: set adopt: true to manage it (its data is kept)`)}; fi`,
    `else`,
    `  lvcreate --yes --wipesignatures y --zero y --addtag ${CREATING_TAG} --name ${shellQuote(i.name)} --size ${i.sizeBytes}b -- ${vg} >&2`,
    `fi`,
    `echo "XE-ADOPTED $adopted"`,
    `lvchange --yes -ay ${lvq} >&2`,
    `udevadm settle 2>/dev/null || true`,
    `real=$(readlink -f -- ${dev})`,
    `rc=0; have=$(blkid -p -o value -s TYPE -- ${dev}) || rc=$?`,
    `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say ${shellQuote(`blkid cannot read /dev/${name}`)}; exit 1; }`,
    `rc=0; pt=$(blkid -p -o value -s PTTYPE -- ${dev}) || rc=$?`,
    `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say ${shellQuote(`blkid cannot read /dev/${name}`)}; exit 1; }`,
    `want=${shellQuote(want)}`,
    `if [ -n "$pt" ]; then xe_refuse ${shellQuote(`${name} holds a partition table (`)} "$pt" ${shellQuote("): refusing to touch a disk that holds data")}; fi`,
    `if [ -n "$have" ] && [ "$have" != "$want" ]; then xe_refuse ${shellQuote(`${name} holds a `)} "$have" ${shellQuote(` filesystem, not ${want || "nothing"}: refusing to format a disk that holds data`)}; fi`,
    ...(want
      ? [
          `if [ -z "$have" ]; then`,
          ...refuseWhenHeld(name, "format").map((l) => `  ${l}`),
          `  ${mkfsCommand(i, dev)} >&2`,
          `fi`,
        ]
      : []),
    probeScript(i.volumeGroup, i.name),
  ].join("\n");
}

/**
 * Makes a copy-on-write snapshot of `origin` (same volume group): the origin's content as it is now. Refused when a
 * volume of the snapshot's name exists already (never taken over) or the origin does not; nothing is written to
 * the snapshot (no signature wipe, no mkfs): its content is the origin's.
 */
function createSnapshotScript(i: LvmVolumeInputs, origin: string): string {
  const name = `${i.volumeGroup}/${i.name}`;
  const vg = shellQuote(i.volumeGroup);
  return [
    `if ! vgs -- ${vg} >/dev/null 2>&1; then xe_refuse ${shellQuote(`volume group ${i.volumeGroup} does not exist on `)} "$(hostname)"; fi`,
    lvExists(i.volumeGroup, origin),
    `[ "$present" = 1 ] || xe_refuse ${shellQuote(`cannot snapshot ${i.volumeGroup}/${origin}: no such volume`)}`,
    lvExists(i.volumeGroup, i.name),
    `if [ "$present" = 1 ]; then`,
    ...madeByLostCreate(name),
    `  else xe_refuse ${shellQuote(`logical volume ${name} already exists: refusing to take it over as a snapshot of ${origin}`)}; fi`,
    `else`,
    `  lvcreate --yes --snapshot --addtag ${CREATING_TAG} --name ${shellQuote(i.name)} --size ${i.sizeBytes}b -- ${shellQuote(`${i.volumeGroup}/${origin}`)} >&2`,
    `fi`,
    `echo "XE-ADOPTED 0"`,
    probeScript(i.volumeGroup, i.name),
  ].join("\n");
}

/**
 * Grows the LV (and the filesystem, where that is safe from the host) and applies a new label. A filesystem a
 * guest holds is the guest's to resize (a WARN line says so); a label is never changed under a guest.
 */
export function updateScript(olds: LvmVolumeOutputs, news: LvmVolumeInputs): string {
  const name = `${news.volumeGroup}/${news.name}`;
  const lvq = shellQuote(name);
  const dev = shellQuote(`/dev/${name}`);
  const lines = [
    DEVICE_HOLDER_FUNCTIONS,
    lvExists(news.volumeGroup, news.name),
    `[ "$present" = 1 ] || xe_refuse ${shellQuote(`${name} does not exist on `)} "$(hostname)" ${shellQuote("; run `pulumi refresh`")}`,
    // A create recorded after its volume was made, whose confirmation was lost: this update confirms it.
    confirmCreatedScript(news.volumeGroup, news.name),
    `cur=$(lvs --noheadings --units b --nosuffix -o lv_size -- ${lvq} | tr -d ' ')`,
    `want=${news.sizeBytes}`,
    `ext=$(lvs --noheadings --units b --nosuffix -o vg_extent_size -- ${lvq} | tr -d ' ')`,
    `want=$(( (want + ext - 1) / ext * ext ))`,
    `if [ "$want" -lt "$cur" ]; then xe_refuse ${shellQuote(`refusing to shrink ${name} from `)} "$cur" " to $want bytes"; fi`,
    `grown=0`,
    `if [ "$want" -gt "$cur" ]; then lvextend --size "$want"b -- ${lvq} >&2; grown=1; fi`,
    // A snapshot grows its copy-on-write space only: its filesystem is the origin's, never resized through it.
    ...(news.snapshotOf ? [`grown=0`] : []),
    `real=$(readlink -f -- ${dev})`,
    // Who has the device: a guest through blkback, a mount in the host, active swap. A failing probe stops here.
    `xe_holder "$real"`,
    `xe_mounted "$real"`,
    `swapping=0; if xe_swapping "$real"; then swapping=1; fi`,
    `rc=0; fs=$(blkid -p -o value -s TYPE -- ${dev}) || rc=$?`,
    `[ "$rc" = 0 ] || [ "$rc" = 2 ] || { xe_say ${shellQuote(`blkid cannot read /dev/${name}`)}; exit 1; }`,
    `if [ "$grown" = 1 ] && [ "$fs" = ext4 ]; then`,
    `  if [ -n "$holder" ]; then printf '%s\\n' ${shellQuote(`WARN ${name} grew, but its filesystem belongs to guest `)}"$holder"${shellQuote(": run resize2fs on that disk inside the guest (the host never resizes a filesystem a guest holds)")}`,
    `  elif [ -n "$mounted" ]; then resize2fs -- "$real" >&2`,
    `  else e2fsck -f -p -- "$real" >&2 || [ $? -le 1 ]; resize2fs -- "$real" >&2; fi`,
    `fi`,
    `if [ "$grown" = 1 ] && [ "$fs" = swap ]; then`,
    `  if [ -n "$holder" ] || [ "$swapping" = 1 ]; then printf '%s\\n' ${shellQuote(`WARN ${name} grew, but its swap is in use: the extra space is used after the next mkswap`)}`,
    `  else u=$(blkid -p -o value -s UUID -- "$real"); l=$(blkid -p -o value -s LABEL -- "$real" || true); mkswap -U "$u" \${l:+-L "$l"} -- "$real" >&2; fi`,
    `fi`,
  ];
  if (news.label !== olds.label && news.label !== null) {
    const label = shellQuote(news.label);
    lines.push(
      `if [ -n "$holder" ]; then xe_refuse ${shellQuote(`refusing to relabel ${name} while guest `)} "$holder" ${shellQuote(" holds it; shut the guest down first")}; fi`,
      `if [ "$fs" = ext4 ]; then e2label -- "$real" ${label}; elif [ "$fs" = swap ]; then swaplabel -L ${label} -- "$real"; fi`,
    );
  }
  lines.push(probeScript(news.volumeGroup, news.name));
  return lines.join("\n");
}

/** How a deleted volume's blocks are cleared before they return to the volume group. */
export type Wipe = "zero" | "discard" | "none";

/**
 * Zeroes the device `$real` names: BLKZEROOUT reads back as zeros everywhere (fast where the device offloads it);
 * else zeros are written.
 */
const ZERO_OUT_REAL = [
  `if ! blkdiscard --zeroout -- "$real" 2>/dev/null; then`,
  `  size=$(blockdev --getsize64 -- "$real")`,
  `  dd if=/dev/zero of="$real" bs=4M iflag=count_bytes count="$size" oflag=direct conv=fsync status=none`,
  `fi`,
];

/**
 * Removes the LV unless something uses it (a refusal names the user), after clearing its blocks as `wipe`
 * says. A volume that is already gone is fine.
 */
export function deleteScript(
  o: Pick<LvmVolumeOutputs, "volumeGroup" | "name"> & { snapshotOf?: string | null },
  wipe: Wipe,
): string {
  const name = `${o.volumeGroup}/${o.name}`;
  const lvq = shellQuote(name);
  const dev = shellQuote(`/dev/${name}`);
  const snapshot = !!o.snapshotOf;
  return [
    DEVICE_HOLDER_FUNCTIONS,
    lvExists(o.volumeGroup, o.name),
    `if [ "$present" = 0 ]; then xe_say ${shellQuote(`${name} is already gone`)}; exit 0; fi`,
    `lvchange --yes -ay ${lvq} >&2`,
    `real=$(readlink -f -- ${dev})`,
    ...refuseWhenHeld(name, "remove"),
    `dm=$(lvs --noheadings -o lv_dm_path -- ${lvq} | tr -d ' ')`,
    `for cfg in /etc/xen/*.cfg /etc/xen/auto/*; do`,
    `  [ -f "$cfg" ] || continue`,
    `  if grep -Fq -e ${dev} -e "$dm" -- "$cfg"; then xe_refuse ${shellQuote(`refusing to remove ${name}: guest config `)} "$cfg" ${shellQuote(" uses it; remove that guest first")}; fi`,
    `done`,
    // lvremove of an origin removes its snapshots with it: refuse while any exists.
    `if ! snaps=$(lvs --noheadings -o lv_name,origin -- ${shellQuote(o.volumeGroup)} 2>&1); then xe_say ${shellQuote(`cannot list the snapshots of ${name}: `)} "$snaps"; exit 1; fi`,
    `snaps=$(printf '%s\\n' "$snaps" | awk -v o=${shellQuote(o.name)} '$2 == o { print $1 }' | xargs)`,
    `if [ -n "$snaps" ]; then xe_refuse ${shellQuote(`refusing to remove ${name}: its snapshots `)} "$snaps" ${shellQuote(" would go with it; remove them first")}; fi`,
    ...(snapshot && wipe === "zero"
      ? [
          // The copy-on-write space holds the origin's old blocks: split it off into a volume of its own (which
          // leaves the origin as it is), zero that, then remove it.
          `xe_say ${shellQuote(`splitting the copy-on-write space off ${name} to zero it before it is removed`)}`,
          `lvconvert --yes --splitsnapshot -- ${lvq} >&2`,
          `lvchange --yes -ay ${lvq} >&2`,
          `real=$(readlink -f -- ${dev})`,
          ...ZERO_OUT_REAL,
        ]
      : snapshot
        ? []
        : wipe === "zero"
          ? [
              `xe_say ${shellQuote(`zeroing ${name} before it is removed (its blocks go back to the volume group)`)}`,
              ...ZERO_OUT_REAL,
            ]
          : wipe === "discard"
            ? [
                `blkdiscard -- "$real" >&2 || xe_say ${shellQuote(`${name}: the device does not support discard; removed without wiping`)}`,
              ]
            : []),
    `lvremove --yes -- ${lvq} >&2`,
  ].join("\n");
}
