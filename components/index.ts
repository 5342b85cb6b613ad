export * from "./xen-guest";
export * from "./migrated-guest";
