// capture: `tpt capture` itself: prints the script, or submits it through libnftables to the
// kernel of the calling thread's network namespace (one netlink transaction, no nft binary,
// no shell: it runs from the scratch image).
#include <array>
#include <memory>
#include <ostream>
#include <string>
#include <unistd.h>

#include <tpt/capture.hpp>

#include <linux/capability.h>
#include <nftables/libnftables.h>
#include <sys/syscall.h>

namespace tpt::capture {
namespace {

// CAP_NET_ADMIN in the effective set. Counted in the process's own user namespace, which is
// the one that owns a pod's (or an `unshare -rn`) network namespace.
bool has_net_admin() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3> data{};
    if (syscall(SYS_capget, &header, data.data()) != 0) {
        return true;  // unknown: let the kernel decide and report
    }
    return (data[0].effective & (1U << CAP_NET_ADMIN)) != 0;
}

struct ContextFree {
    void operator()(nft_ctx* ctx) const { nft_ctx_free(ctx); }
};

// Submits an nft script; returns libnftables' error text, empty when the kernel took it.
std::string submit(const std::string& script) {
    const std::unique_ptr<nft_ctx, ContextFree> ctx(nft_ctx_new(NFT_CTX_DEFAULT));
    if (!ctx) {
        return "libnftables: cannot create a context";
    }
    nft_ctx_buffer_output(ctx.get());
    nft_ctx_buffer_error(ctx.get());
    if (nft_run_cmd_from_buffer(ctx.get(), script.c_str()) == 0) {
        return {};
    }
    const char* text = nft_ctx_get_error_buffer(ctx.get());
    std::string error = text != nullptr && *text != '\0' ? text : "libnftables: failed\n";
    return error;
}

constexpr std::string_view permission_hint =
    "tpt capture: changing netfilter rules needs CAP_NET_ADMIN in this network namespace. In\n"
    "Kubernetes: an init container with securityContext.runAsUser 0 and capabilities.add\n"
    "[NET_ADMIN] (a non-root user gets no added capability); the chart's capture.enabled does\n"
    "that.\n";

constexpr std::string_view no_nat_hint =
    "tpt capture: this kernel lacks what the rules need: nf_tables with NAT chains and\n"
    "REDIRECT (CONFIG_NF_TABLES, CONFIG_NFT_NAT, CONFIG_NFT_REDIR), and IPv6 netfilter\n"
    "unless --no-ipv6 is given.\n";

}  // namespace

Exit run(const cli::CaptureArgs& args, std::ostream& out, std::ostream& err) {
    const auto rules = rules_from(args);
    if (!rules) {
        err << "tpt capture: " << rules.error().message << "\n";
        return Exit::usage;
    }
    if (args.mode == cli::CaptureMode::print) {
        out << apply_script(*rules);
        return Exit::ok;
    }
    if (!has_net_admin()) {
        err << permission_hint;
        return Exit::no_permission;
    }
    const bool apply = args.mode == cli::CaptureMode::apply;
    const std::string error = submit(apply ? apply_script(*rules) : remove_script());
    if (error.empty()) {
        out << "tpt capture: " << (apply ? "rules installed" : "rules removed") << " (tables ip"
            << (apply && !rules->ipv6 ? "" : " and ip6") << " " << table_name << ")\n";
        return Exit::ok;
    }
    err << error;
    const Exit exit = classify_failure(error);
    err << (exit == Exit::no_permission ? permission_hint
            : exit == Exit::no_nat      ? no_nat_hint
                                        : "tpt capture: the kernel refused the rules\n");
    return exit;
}

}  // namespace tpt::capture
