export * from "./xen-guest";
