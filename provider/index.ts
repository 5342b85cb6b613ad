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
import { dom0PackagesKind } from "./resources/dom0-packages";
import { dom0AccessKind } from "./resources/dom0-access";
import { dom0FirewallKind } from "./resources/dom0-firewall";
import { dom0XenBootKind } from "./resources/dom0-xen-boot";
import { dom0NetworkKind } from "./resources/dom0-network";
import { dom0MonitoringKind } from "./resources/dom0-monitoring";
import { dom0RebootKind } from "./resources/dom0-reboot";
import { hetznerInstallimageKind } from "./resources/hetzner-installimage";

registerKinds([
  remoteFileKind,
  lvmVolumeKind,
  bridgedDomUKind,
  natDomUKind,
  varnishFrontendKind,
  linodeMigrationKind,
  dom0PackagesKind,
  dom0AccessKind,
  dom0FirewallKind,
  dom0XenBootKind,
  dom0NetworkKind,
  dom0MonitoringKind,
  dom0RebootKind,
  hetznerInstallimageKind,
]);

// Resources
export * from "./resources/remote-file";
export * from "./resources/lvm-volume";
export * from "./resources/bridged-domu";
export * from "./resources/nat-domu";
export * from "./resources/varnish-frontend";
export * from "./resources/linode-migration";
export * from "./resources/dom0-packages";
export * from "./resources/dom0-access";
export * from "./resources/dom0-firewall";
export * from "./resources/dom0-xen-boot";
export * from "./resources/dom0-network";
export * from "./resources/dom0-monitoring";
export { Dom0Reboot, dom0RebootKind, rebootReasons, verifyProblems } from "./resources/dom0-reboot";
export type { Dom0RebootArgs, Dom0RebootInputs, Dom0RebootOutputs } from "./resources/dom0-reboot";
export * from "./resources/hetzner-installimage";
// Component (also at "xen-estate/components")
export { XenGuest } from "../components/xen-guest";
export { Dom0Host } from "../components/dom0-host";
export type { Dom0HostArgs } from "../components/dom0-host";
export type { XenGuestArgs, BridgedNetworkArgs, NatNetworkArgs } from "../components/xen-guest";
export { MigratedGuest } from "../components/migrated-guest";
export type { MigratedGuestArgs } from "../components/migrated-guest";

// The guest engine's arguments and helpers
export * from "./guest/args";
export { GUEST_CHANGES } from "./guest/changes";
export { checkGuestBase, checkIp, checkMac, checkCidr } from "./guest/check";
export { renderGuestConfig, guestGrubConfig, guestFstab } from "./guest/render";
export {
  installGuest,
  installScript,
  settingsScript,
  DebootstrapProgress,
  DEBOOTSTRAP_BASE,
  directKernelRelease,
  recordedInstall,
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
export {
  applyWithRollback,
  armAndApplyScript,
  confirmScript,
  SSH_PEER_FUNCTION,
  ROLLBACK_ROOT,
} from "./remote/rollback";
export type { GuardedChange, GuardedFile, GuardedResult } from "./remote/rollback";

// Dom0 planning shared by the Dom0Host concerns
export { parseNetwork, networkContains, coveringNetwork } from "./dom0/addresses";
export type { Network } from "./dom0/addresses";
export { parseAuthorizedKey, publicKeyOf } from "./dom0/keys";
export { OS_FACTS, osFacts } from "./dom0/os";

// SSH
export * from "./ssh/connection";
export { SshPool, DIAL_LOG_ENV } from "./ssh/pool";
export type { PoolOptions } from "./ssh/pool";
export { RemoteHost, REFUSED_EXIT } from "./ssh/remote-host";
export type { RunOptions, RunResult } from "./ssh/remote-host";
export { fingerprintOf, parseHostKeyPin } from "./ssh/hostkey";

// Core
export * from "./core/errors";
export { Checker, UNKNOWN, containsUnknown, isSafeAbsolutePath, PATH_RULE } from "./core/validate";
export { shellQuote, shellJoin } from "./core/shell";
export { Logger, redact, setLogSink } from "./core/log";
export { recordedSecret, secretMarker, secretSha } from "./core/secrets";
export type { LogSink, Severity } from "./core/log";
export { render, templateNames, TEMPLATE_DIR } from "./core/templates";
export { parseSize, formatSize, roundUpToExtent, MAX_SIZE_BYTES } from "./core/units";
export { parseCidr, derivedMac, macProblem } from "./core/network";
export { VERSION, MODULE, PACKAGE_ROOT } from "./core/package";
export { checkInstallimage, renderInstallimageConfig, driveMismatches } from "./dom0/installimage";
export type { InstallimagePlan } from "./dom0/installimage";
