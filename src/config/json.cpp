// to_json() (the admin server's GET /config) and sha256_hex() (change detection).
#include <array>
#include <stdexcept>

#include <boost/json.hpp>

#include <tpt/config.hpp>

#include <openssl/evp.h>

namespace tpt::config {

namespace {

namespace json = boost::json;

constexpr std::string_view redacted = "<redacted>";

json::value address_json(const std::optional<address::HostPort>& hp) {
    if (!hp) {
        return nullptr;
    }
    return json::string(hp->to_string());
}

// Header values are credentials (Proxy-Authorization); only the names are shown.
json::object headers_json(const std::vector<Header>& headers) {
    json::object o;
    for (const auto& h : headers) {
        o[h.name] = redacted;
    }
    return o;
}

// The files are shown, the user name is not (SPEC §13: nothing that came from auth).
json::value auth_json(const std::optional<BasicAuth>& auth) {
    if (!auth) {
        return nullptr;
    }
    json::object basic;
    basic["username"] = redacted;
    basic["username_file"] =
        auth->username_file ? json::value(*auth->username_file) : json::value(nullptr);
    basic["password_file"] = auth->password_file;
    json::object o;
    o["basic"] = std::move(basic);
    return o;
}

// A value that came from a file is never shown.
json::value maybe_secret(json::value v, bool from_file) {
    return from_file ? json::value(redacted) : v;
}

json::object via_json(const Via& v) {
    json::object o;
    o["target"] = maybe_secret(address_json(v.target), v.target_from_file);
    o["use_sni_as_target"] = v.use_sni_as_target;
    // null: the connection's default (443 TLS, 80 HTTP, the original port when transparent).
    o["target_port"] = v.target_port ? json::value(*v.target_port) : json::value(nullptr);
    o["connect_timeout"] = duration::format(v.connect_timeout);
    o["stats_interval"] = duration::format(v.stats_interval);
    o["headers"] = headers_json(v.headers);
    o["auth"] = auth_json(v.auth);
    return o;
}

json::value optional_via_json(const std::optional<Via>& v) {
    if (!v) {
        return nullptr;
    }
    return via_json(*v);
}

json::object server_json(const Server& s) {
    json::object o;
    json::array listen;
    for (const auto& hp : s.listen) {
        listen.emplace_back(hp.to_string());
    }
    o["listen"] = std::move(listen);
    o["protocol"] = address::to_string(s.protocol);
    o["tls"] = s.tls;
    o["http"] = s.http;
    o["transparent"] = s.transparent;
    o["accept_connect"] = s.accept_connect;
    o["sni_must_match"] = s.sni_must_match;
    json::object sni;
    for (const auto& r : s.sni) {
        json::object route;
        route["upstream"] = r.upstream;
        route["wildcard"] = r.wildcard;
        route["via"] = optional_via_json(r.via);
        sni[r.key] = std::move(route);
    }
    o["sni"] = std::move(sni);
    o["default"] = s.default_upstream;
    o["maxclients"] = s.maxclients;
    o["client_hello_timeout"] = duration::format(s.client_hello_timeout);
    o["idle_timeout"] = duration::format(s.idle_timeout);
    o["via"] = optional_via_json(s.via);
    return o;
}

json::object health_json(const HealthCheck& h) {
    json::object o;
    o["interval"] = duration::format(h.interval);
    o["timeout"] = duration::format(h.timeout);
    o["fail_after"] = h.fail_after;
    o["pass_after"] = h.pass_after;
    o["probe_target"] = maybe_secret(address_json(h.probe_target), h.probe_target_from_file);
    o["headers"] = headers_json(h.headers);
    o["auth"] = auth_json(h.auth);
    return o;
}

// A single URL as the string it was written as; a pool as its map (SPEC §13).
json::value upstream_json(const Upstream& u) {
    if (!u.pool) {
        return maybe_secret(json::string(u.url), u.members.front().url_from_file);
    }
    json::array servers;
    for (const auto& m : u.members) {
        servers.push_back(maybe_secret(json::string(m.url), m.url_from_file));
    }
    json::object o;
    o["servers"] = std::move(servers);
    o["strategy"] = to_string(u.strategy);
    o["health"] = health_json(u.health);
    return o;
}

}  // namespace

std::string to_json(const Config& config) {
    json::object root;
    root["version"] = config.version;
    root["log"] = to_string(config.log);
    root["log_format"] = config.log_format == LogFormat::json ? "json" : "text";

    json::object admin;
    admin["listen"] = config.admin.listen ? config.admin.listen->to_string() : std::string{};
    admin["control_from"] = config.admin.control_from == ControlFrom::any ? "any" : "loopback";
    root["admin"] = std::move(admin);

    json::object reload;
    reload["watch"] = config.reload.watch;
    reload["poll_interval"] = duration::format(config.reload.poll_interval);
    root["reload"] = std::move(reload);

    json::object shutdown;
    shutdown["delay"] = duration::format(config.shutdown.delay);
    shutdown["drain_timeout"] = duration::format(config.shutdown.drain_timeout);
    root["shutdown"] = std::move(shutdown);

    root["resolve_interval"] = duration::format(config.resolve_interval);

    json::object servers;
    for (const auto& s : config.servers) {
        servers[s.name] = server_json(s);
    }
    root["servers"] = std::move(servers);

    json::object upstreams;
    for (const auto& u : config.upstreams) {
        upstreams[u.name] = upstream_json(u);
    }
    root["upstream"] = std::move(upstreams);
    return json::serialize(root);
}

std::string sha256_hex(std::string_view bytes) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
    unsigned int size = 0;
    if (EVP_Digest(bytes.data(), bytes.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1) {
        // Only on allocation failure inside OpenSSL; there is no meaningful hash to return.
        throw std::runtime_error("sha256: EVP_Digest failed");
    }
    constexpr std::string_view hex = "0123456789abcdef";
    std::string out;
    out.reserve(std::size_t{2} * size);
    for (unsigned int i = 0; i < size; ++i) {
        out += hex[digest[i] >> 4U];
        out += hex[digest[i] & 0xfU];
    }
    return out;
}

}  // namespace tpt::config
