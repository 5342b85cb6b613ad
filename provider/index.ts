/**
 * xen-estate: Pulumi resources that take a rented dedicated server from a bare box to a running Xen estate.
 *
 * Importing this module registers every resource kind with the provider runtime; the serialized provider
 * closures `require("xen-estate")` and call {@link runtime}.
 */
export * from "./errors";
export * from "./connection";
export { Checker, UNKNOWN, containsUnknown } from "./validate";
export { shellQuote, shellJoin } from "./shell";
export { Logger, redact, setLogSink, formatBytes } from "./log";
export type { LogSink, Severity } from "./log";
export { SshPool, RemoteHost } from "./ssh/executor";
export type { RunOptions, RunResult, PoolOptions } from "./ssh/executor";
export { fingerprintOf, parseHostKeyPin } from "./ssh/hostkey";
export * from "./remote-file";
export { render, templateNames, TEMPLATE_DIR } from "./templates";
export {
  runtime,
  providerFor,
  resourceInputs,
  registerKind,
  checkInputs,
  planDiff,
  assertValid,
  sharedPool,
  setSharedPool,
  VERSION,
  MODULE,
} from "./dynamic";
export type { Kind, Context, CommonInputs } from "./dynamic";
export * from "./remoteFile";
export * from "./lvmVolume";
export { parseSize, formatSize, roundUpToExtent } from "./units";
export * from "./guest";
export * from "./bridgedDomU";
export * from "./natDomU";
export { parseCidr, derivedMac, macProblem } from "./network";
export * from "./varnishFrontend";
