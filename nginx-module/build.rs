//! Configuration flags from the nginx build the module is compiled against (nginx-sys
//! reports them through `DEP_NGINX_*`):
//!
//! * `ngx_cookie_list`: nginx >= 1.23.0, where the request's `Cookie` headers are a
//!   linked list (`headers_in.cookie`, `ngx_table_elt_t.next`) instead of an array
//!   (`headers_in.cookies`, Debian 12's 1.22.1).
//! * `ngx_ssl`: the build has SSL (or `--with-compat`): `ngx_connection_t.ssl` exists.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(ngx_cookie_list)");
    println!("cargo::rustc-check-cfg=cfg(ngx_ssl)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");

    if let Ok(version) = std::env::var("DEP_NGINX_VERSION_NUMBER") {
        if version.trim().parse::<u64>().is_ok_and(|v| v >= 1_023_000) {
            println!("cargo::rustc-cfg=ngx_cookie_list");
        }
    }
    if let Ok(features) = std::env::var("DEP_NGINX_FEATURES") {
        if features.split(',').map(str::trim).any(|f| f == "ssl" || f == "compat") {
            println!("cargo::rustc-cfg=ngx_ssl");
        }
    }
}
