/**
 * VarnishFrontend: Varnish 7 on the dom0 routes HTTP by Host header to guests behind its NAT. See ./kind.ts for how
 * changes reach the running varnishd.
 */
import * as pulumi from "@pulumi/pulumi";
import { defineResource } from "../../framework/resource";
import type { ConnectionArgs } from "../../ssh/connection";
import { varnishFrontendKind } from "./kind";
import type { VarnishSite } from "./plan";

export { varnishFrontendKind };
export type { VarnishFrontendInputs, VarnishFrontendOutputs } from "./kind";
export type { VarnishSite } from "./plan";
export {
  hostCondition,
  renderVcl,
  renderDropIn,
  renderLogDropIn,
  VARNISH_VCL,
  VARNISH_DROP_IN,
  VARNISH_VALIDATE,
  VARNISHNCSA_DROP_IN,
} from "./plan";
export { reloadScript } from "./scripts";

/** Health check of a site's backend. */
export interface VarnishHealthCheckArgs {
  /** Path requested. @default "/" */
  readonly path?: pulumi.Input<string>;
  /** Seconds between checks. @default 5 */
  readonly intervalSeconds?: pulumi.Input<number>;
  /** Seconds a check may take. @default 2 */
  readonly timeoutSeconds?: pulumi.Input<number>;
}

/** One site: the host names it answers and the guest that serves it. */
export interface VarnishSiteArgs {
  /**
   * Host header values (compared lower-case, without a port): exact names such as `www.example.org`, or
   * `*.example.org` for every subdomain (not the name itself). Each name belongs to one site.
   */
  readonly hostnames: pulumi.Input<pulumi.Input<string>[]>;
  /** The guest serving the site: `IPv4` or `IPv4:port`, e.g. a NatDomU's address. Port @default 80 */
  readonly backend: pulumi.Input<string>;
  /** Probe the backend and send no traffic to it while it is sick; `false` turns it off. @default path "/" every 5 s */
  readonly healthCheck?: pulumi.Input<VarnishHealthCheckArgs | false>;
  /** Seconds to wait for the backend's first byte. @default 60 */
  readonly firstByteTimeoutSeconds?: pulumi.Input<number>;
}

export interface VarnishFrontendArgs {
  /** How to reach the dom0 (or any Debian/Ubuntu host with systemd). */
  readonly connection: pulumi.Input<ConnectionArgs>;
  /** The sites, in order of precedence. At least one. */
  readonly sites: pulumi.Input<pulumi.Input<VarnishSiteArgs>[]>;
  /** Where Varnish accepts HTTP: `:80` (every address), `203.0.113.5:80`… Changing it restarts varnishd. @default [":80"] */
  readonly listen?: pulumi.Input<pulumi.Input<string>[]>;
  /** Memory for the cache (`256MiB`, `1GiB`). Changing it restarts varnishd, emptying the cache. @default "256MiB" */
  readonly cacheSize?: pulumi.Input<string>;
  /** Install the `varnish` package with apt when it is missing; otherwise refuse. @default true */
  readonly installPackage?: pulumi.Input<boolean>;
  /** Older VCLs kept loaded after a reload, to switch back by hand (`varnishadm vcl.use`). @default 2 */
  readonly keepVcls?: pulumi.Input<number>;
  /**
   * Seconds `up` waits, after a start, restart or reload, until every site's backend is healthy and a request with
   * its Host header is answered (not 503) through Varnish; `up` fails naming the sites that do not serve. 0 does not
   * wait. @default 120
   */
  readonly readyTimeoutSeconds?: pulumi.Input<number>;
}

/** Varnish on a host routing HTTP by Host header to the estate's guests. */
export class VarnishFrontend extends defineResource<VarnishFrontendArgs>({
  name: varnishFrontendKind.name,
  outputOnly: varnishFrontendKind.outputOnly ?? [],
}) {
  declare readonly sites: pulumi.Output<VarnishSite[]>;
  declare readonly listen: pulumi.Output<string[]>;
  /** Files it owns on the host (path → content). */
  declare readonly files: pulumi.Output<Record<string, string>>;
  /** The VCL Varnish runs now. */
  declare readonly activeVcl: pulumi.Output<string | null>;
}
