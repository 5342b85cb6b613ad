export * from "./xen-guest";
export * from "./migrated-guest";
export * from "./dom0-host";
