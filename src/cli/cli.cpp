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

}  // namespace

ParseResult parse(int argc, const char* const* argv) {
    ParseResult result;
    Options opts;
    opts.no_arguments = argc <= 1;
    try {
        po::variables_map vm;
        const po::options_description desc = describe();  // `parsed` points into it
        const po::parsed_options parsed =
            po::command_line_parser(argc, argv).options(desc).style(style).run();
        // tpt takes no positional arguments: a stray word is most likely a config path that
        // lost its -c, and ignoring it would load some other file.
        const auto stray = po::collect_unrecognized(parsed.options, po::include_positional);
        if (!stray.empty()) {
            result.error = "unexpected argument '" + stray.front() + "'";
            return result;
        }
        po::store(parsed, vm);
        po::notify(vm);
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
    } catch (const po::error& e) {
        result.error = e.what();
        return result;
    }
    result.options = std::move(opts);
    return result;
}

std::string help_text(std::string_view program) {
    std::ostringstream out;
    out << "Usage: " << program
        << " [-c|--config PATH] [-t|--check-config] [--version] [-h|--help]\n"
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
