/**
 * xen-estate: Pulumi resources that take a rented dedicated server from a bare box to a running Xen estate.
 *
 * This is the package entry. It registers every resource kind it ships with the runtime (the framework itself
 * knows none), and exports the resources, the XenGuest component and the building blocks. The serialized provider
 * closures `require("xen-estate")` and call {@link runtime}.
 */
import { registerKinds } from "./framework/registry";
import { bridgedDomUKind } from "./resources/bridged-domu";
import { linodeMigrationKind } from "./resources/linode-migration";
import { lvmVolumeKind } from "./resources/lvm-volume";
import { natDomUKind } from "./resources/nat-domu";
import { remoteFileKind } from "./resources/remote-file";
import { varnishFrontendKind } from "./resources/varnish-frontend";

registerKinds([
  remoteFileKind,
  lvmVolumeKind,
  bridgedDomUKind,
  natDomUKind,
  varnishFrontendKind,
  linodeMigrationKind,
]);

// Resources
export * from "./resources/remote-file";
export * from "./resources/lvm-volume";
export * from "./resources/bridged-domu";
export * from "./resources/nat-domu";
export * from "./resources/varnish-frontend";
export * from "./resources/linode-migration";
// Component (also at "xen-estate/components")
export { XenGuest } from "../components/xen-guest";
export type { XenGuestArgs, BridgedNetworkArgs, NatNetworkArgs } from "../components/xen-guest";
export { MigratedGuest } from "../components/migrated-guest";
export type { MigratedGuestArgs } from "../components/migrated-guest";

// The guest engine's arguments and helpers
export * from "./guest/args";
export { GUEST_CHANGES } from "./guest/changes";
export { checkGuestBase, checkIp, checkMac, checkCidr } from "./guest/check";
export { renderGuestConfig, guestGrubConfig, guestFstab } from "./guest/render";
export {
  installScript,
  settingsScript,
  DebootstrapProgress,
  DEBOOTSTRAP_BASE,
  directKernelRelease,
} from "./guest/install";
export { natRulesScript, natProbeScript } from "./guest/nat";
export { claimAddresses } from "./guest/claims";
export { configPath, INSTALL_MARKER, PVGRUB2, NAT_CONF, NAT_SCRIPT, XEN_CONFIG_DIR } from "./guest/paths";

// Framework
export { runtime, sharedPool, setSharedPool, hostContext } from "./framework/runtime";
export { checkInputs, planDiff, assertValid, deepEqual } from "./framework/plan";
export { providerFor, resourceInputs, defineResource } from "./framework/resource";
export type { Kind, Context, CommonInputs, ChangePlan } from "./framework/kind";
export { kindNames } from "./framework/registry";

// Remote primitives
export * from "./remote/files";
export { withHostLock, HOST_LOCK } from "./remote/lock";
export { DEVICE_HOLDER_FUNCTIONS } from "./remote/devices";
export { pipeBetween } from "./remote/pipe";
export type { PipeEnd, PipeResult } from "./remote/pipe";

// SSH
export * from "./ssh/connection";
export { SshPool } from "./ssh/pool";
export type { PoolOptions } from "./ssh/pool";
export { RemoteHost, REFUSED_EXIT } from "./ssh/remote-host";
export type { RunOptions, RunResult } from "./ssh/remote-host";
export { fingerprintOf, parseHostKeyPin } from "./ssh/hostkey";

// Core
export * from "./core/errors";
export { Checker, UNKNOWN, containsUnknown, isSafeAbsolutePath, PATH_RULE } from "./core/validate";
export { shellQuote, shellJoin } from "./core/shell";
export { Logger, redact, setLogSink } from "./core/log";
export type { LogSink, Severity } from "./core/log";
export { render, templateNames, TEMPLATE_DIR } from "./core/templates";
export { parseSize, formatSize, roundUpToExtent, MAX_SIZE_BYTES } from "./core/units";
export { parseCidr, derivedMac, macProblem } from "./core/network";
export { VERSION, MODULE, PACKAGE_ROOT } from "./core/package";
