// cli: the command line (SPEC §2) on Boost.Program_options, and the config search order.
#include <array>
#include <sstream>

#include <boost/program_options.hpp>

#include <tpt/cli.hpp>

namespace tpt::cli {
namespace {

namespace po = boost::program_options;

po::options_description describe() {
    po::options_description desc("Options", 100, 50);
    desc.add_options()                                                      //
        ("config,c", po::value<std::string>()->value_name("PATH"),          //
         "configuration file (YAML); default: the first found, see below")  //
        ("check-config,t",
         "validate the configuration, print the result, exit 0 or 1; bind nothing")  //
        ("version", "print the version and exit")                                    //
        ("help,h", "print this help and exit");
    return desc;
}

// Boost's default style, without abbreviations: "--conf" or "--check" would silently mean
// whichever option they happen to prefix today.
constexpr int style =
    po::command_line_style::default_style & ~po::command_line_style::allow_guessing;

// Parses argv against desc into vm; returns the usage error, empty when there is none.
std::string parse_into(int argc, const char* const* argv, const po::options_description& desc,
                       po::variables_map& vm) {
    try {
        const po::parsed_options parsed =
            po::command_line_parser(argc, argv).options(desc).style(style).run();
        // No positional arguments: a stray word is most likely a value that lost its option
        // (a config path without -c), and ignoring it would do something else than asked.
        const auto stray = po::collect_unrecognized(parsed.options, po::include_positional);
        if (!stray.empty()) {
            return "unexpected argument '" + stray.front() + "'";
        }
        po::store(parsed, vm);
        po::notify(vm);
    } catch (const po::error& e) {
        return e.what();
    }
    return {};
}

po::options_description describe_capture() {
    po::options_description desc("Options of tpt capture", 100, 50);
    desc.add_options()                                                                  //
        ("ports", po::value<std::string>()->value_name("P,P..."),                       //
         "TCP destination ports to capture, e.g. 443,80")                               //
        ("to", po::value<std::string>()->value_name("PORT"),                            //
         "the local port of tpt's transparent listener, e.g. 15001")                    //
        ("uid", po::value<std::string>()->value_name("UID"),                            //
         "never capture sockets of this user: tpt's own (default 65532)")               //
        ("exclude-cidr", po::value<std::vector<std::string>>()->value_name("CIDR"),     //
         "never capture traffic to this range (repeat, or separate with commas)")       //
        ("ipv6", "capture IPv6 too (the default)")                                      //
        ("no-ipv6", "capture IPv4 only")                                                //
        ("print", "print the nft script that --apply installs (the default)")           //
        ("apply", "install the rules in this network namespace (needs CAP_NET_ADMIN)")  //
        ("remove", "remove every rule tpt capture installed; leave other rules alone")  //
        ("help,h", "print this help and exit");
    return desc;
}

// The mode options are exclusive: "--apply --remove" has no sensible meaning.
std::string capture_mode(const po::variables_map& vm, CaptureArgs& args) {
    int given = 0;
    for (const auto& [name, mode] :
         {std::pair{"print", CaptureMode::print}, std::pair{"apply", CaptureMode::apply},
          std::pair{"remove", CaptureMode::remove}}) {
        if (vm.count(name) != 0) {
            args.mode = mode;
            ++given;
        }
    }
    return given > 1 ? "choose one of --print, --apply and --remove" : "";
}

// argv[0] is "capture".
ParseResult parse_capture(int argc, const char* const* argv) {
    ParseResult result;
    result.capture = true;
    po::variables_map vm;
    const po::options_description desc = describe_capture();
    result.error = parse_into(argc, argv, desc, vm);
    if (!result.error.empty()) {
        return result;
    }
    CaptureArgs args;
    if (vm.count("ipv6") != 0 && vm.count("no-ipv6") != 0) {
        result.error = "--ipv6 and --no-ipv6 contradict each other";
        return result;
    }
    args.ipv6 = vm.count("no-ipv6") == 0;
    args.help = vm.count("help") != 0;
    const auto text = [&vm](const char* name) -> std::optional<std::string> {
        return vm.count(name) != 0 ? std::optional(vm[name].as<std::string>()) : std::nullopt;
    };
    args.ports = text("ports");
    args.to = text("to");
    args.uid = text("uid");
    if (vm.count("exclude-cidr") != 0) {
        args.exclude_cidrs = vm["exclude-cidr"].as<std::vector<std::string>>();
    }
    result.error = capture_mode(vm, args);
    if (result.error.empty()) {
        result.options.emplace();
        result.options->capture = std::move(args);
    }
    return result;
}

}  // namespace

ParseResult parse(int argc, const char* const* argv) {
    if (argc > 1 && std::string_view(argv[1]) == "capture") {
        return parse_capture(argc - 1, argv + 1);
    }
    ParseResult result;
    Options opts;
    opts.no_arguments = argc <= 1;
    po::variables_map vm;
    const po::options_description desc = describe();
    result.error = parse_into(argc, argv, desc, vm);
    if (!result.error.empty()) {
        return result;
    }
    if (vm.count("config") != 0) {
        opts.config_path = vm["config"].as<std::string>();
        if (opts.config_path->empty()) {
            result.error = "the argument for option '--config' is empty";
            return result;
        }
    }
    opts.check_config = vm.count("check-config") != 0;
    opts.version = vm.count("version") != 0;
    opts.help = vm.count("help") != 0;
    result.options = std::move(opts);
    return result;
}

std::string help_text(std::string_view program) {
    std::ostringstream out;
    out << "Usage: " << program
        << " [-c|--config PATH] [-t|--check-config] [--version] [-h|--help]\n"
        << "       " << program << " capture --ports P,P... --to PORT [options]   (see --help)\n"
        << "\n"
        << "TCP proxy for Kubernetes sidecars: routes TLS by SNI without terminating it, directly\n"
        << "or through an HTTP CONNECT proxy, and reloads its configuration when it changes.\n"
        << "\n"
        << describe() << "\n"
        << "Without --config, the first existing file of:\n"
        << "  $TPT_CONFIG, $tpt_CONFIG, /etc/tpt/tpt.yaml, /etc/tpt/config.yaml, ./tpt.yaml,\n"
        << "  ./config.yaml\n"
        << "\n"
        << "Environment: TPT_LOG overrides the configured log level.\n"
        << "Signals: SIGHUP reloads the configuration; SIGTERM/SIGINT drain and exit.\n";
    return out.str();
}

std::string capture_help_text(std::string_view program) {
    std::ostringstream out;
    out << "Usage: " << program
        << " capture --ports P,P... --to PORT [--uid UID] [--exclude-cidr CIDR]...\n"
        << "           [--ipv6|--no-ipv6] [--print|--apply|--remove]\n"
        << "\n"
        << "Transparent egress capture (SPEC 11): netfilter rules in this network namespace's\n"
        << "nat OUTPUT hook that redirect outgoing TCP to the given ports to tpt's transparent\n"
        << "listener, except traffic to 127.0.0.1, ::1 and the excluded ranges, and traffic of\n"
        << "the excluded UID (tpt's own upstream connections). Run once per pod, as an init\n"
        << "container with CAP_NET_ADMIN; --apply replaces what an earlier run installed.\n"
        << "\n"
        << describe_capture() << "\n"
        << "Exit status: 0 done, 1 the kernel refused the rules, 2 usage error (bad port, CIDR\n"
        << "or UID), 3 no CAP_NET_ADMIN, 4 the kernel lacks nftables NAT support.\n";
    return out.str();
}

Search find_config(const env::Lookup& lookup,
                   const std::function<bool(const std::string&)>& exists) {
    Search search;
    auto consider = [&](std::string path) {
        search.tried.push_back(path);
        if (exists(path)) {
            search.found = std::move(path);
            return true;
        }
        return false;
    };
    // An unset or empty variable names no path, so it is not "tried".
    for (const std::string_view var : {"TPT_CONFIG", "tpt_CONFIG"}) {
        std::optional<std::string> value = lookup(var);
        if (value && !value->empty() && consider(std::move(*value))) {
            return search;
        }
    }
    constexpr std::array<std::string_view, 4> defaults{"/etc/tpt/tpt.yaml", "/etc/tpt/config.yaml",
                                                       "./tpt.yaml", "./config.yaml"};
    for (const std::string_view path : defaults) {
        if (consider(std::string(path))) {
            return search;
        }
    }
    return search;
}

}  // namespace tpt::cli
