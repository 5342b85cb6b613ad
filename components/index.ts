export * from "./xen-guest";
export * from "./dom0-host";
