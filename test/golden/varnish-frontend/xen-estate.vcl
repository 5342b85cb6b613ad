vcl 4.1;
# Managed by xen-estate; `pulumi up` reverts edits made here. Compiled with `varnishd -C` before it
# replaces the running VCL; loaded into the running varnishd (vcl.load + vcl.use), which keeps connections open.
#
# Routing: the Host header, lower-cased and without a port, picks the site; a host no site names gets 404, so a
# request never reaches a guest it was not meant for. `*.example.org` matches subdomains only (dots escaped).
import std;

# No default backend: only the sites below are ever contacted.
backend default none;

# Site 0: app1.example.org, www.app1.example.org
probe site0_probe {
    .url = "/";
    .interval = 5s;
    .timeout = 2s;
    .window = 5;
    .threshold = 3;
    # A freshly loaded VCL trusts the backend until a probe says otherwise; Varnish's default (threshold - 1)
    # would answer 503 right after every reload until the first probe came back.
    .initial = 3;
}
backend site0 {
    .host = "10.0.0.5";
    .port = "80";
    .connect_timeout = 5s;
    .first_byte_timeout = 60s;
    .probe = site0_probe;
}

# Site 1: *.shop.example
backend site1 {
    .host = "10.0.0.6";
    .port = "8080";
    .connect_timeout = 5s;
    .first_byte_timeout = 300s;
}

sub vcl_recv {
    set req.http.Host = std.tolower(regsub(req.http.Host, ":[0-9]+$", ""));
    if (req.http.Host == "app1.example.org" || req.http.Host == "www.app1.example.org") {
        set req.backend_hint = site0;
    } elsif (req.http.Host ~ "\.shop\.example$") {
        set req.backend_hint = site1;
    } else {
        return (synth(404, "Unknown site"));
    }
}
