/**
 * What a change to a guest does, declared once. Planning classifies each update by these lists
 * ({@link planDiff}), `preview` says when an update restarts the guest, and the lifecycle acts on the classes.
 * Anything not listed is bookkeeping (no remote action beyond converging the files).
 */
export const GUEST_CHANGES = {
  /** Applied to the running domain (`xl mem-set`, `xl vcpu-set`) and persisted to the config. */
  live: ["memoryMiB", "vcpus"],
  /** Config rewritten, then the domain is shut down and created again. */
  restart: ["type", "boot", "disks", "vifs", "maxMemoryMiB", "maxVcpus"],
  /**
   * The settings an install wrote into the guest (hostname, address, gateway, resolvers, root's SSH keys): rewritten
   * in the stopped guest's filesystem, then the guest starts again. Without an install the guest owns them.
   */
  settings: ["guestSettings"],
  /** Config rewritten; takes effect at the next boot. */
  config: ["onPoweroff", "onReboot", "onCrash", "autostart"],
} as const;

/** Replace the guest (the old one is deleted first: names, MACs and IPs are unique on a host). */
export const GUEST_REPLACE_ON = ["name"] as const;

/** What `preview` says about the disruptive classes. */
export const GUEST_CHANGE_NOTES = {
  restart: "restarts the guest",
  settings: "rewrites the guest's installed settings in its stopped filesystem and restarts it",
} as const;
