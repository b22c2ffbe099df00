// Strict validation of Kubernetes manifests against the OpenAPI types of the npm packages
// kubernetes-models (core, apps, batch, policy, networking, ...) and
// @kubernetes-models/prometheus-operator (ServiceMonitor, PodMonitor, PrometheusRule).
//
//   node e2e/k8s_schema.mjs NODE_MODULES_DIR < manifests.json
//
// stdin: a JSON array of manifests. stdout: a JSON array with one entry per manifest,
// {kind, name, errors: [...]}, empty errors when the manifest is valid.
//
// The packages' validate() checks types, required fields, enums and formats, but lets any
// unknown field through (the OpenAPI schemas carry no additionalProperties: false), while
// the API server's strict field validation rejects them (`kubectl apply` warns or fails, and
// the field is silently dropped). So the walk adds that: each type's validator is code
// generated from its schema, and it reads every property its schema lists (`data.<name>`).
// Every object of the manifest is wrapped in a Proxy that records which keys were read;
// a key of an object that nothing read is in no property list of that object's type: an
// unknown field. Objects whose type lists no properties at all (free-form maps such as
// labels, whose keys are read while iterating, or preserve-unknown-fields objects) record no
// property reads and are left alone, and so is everything below an unknown field.
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node k8s_schema.mjs NODE_MODULES_DIR < manifests.json");
  process.exit(2);
}

function modelPath(apiVersion, kind) {
  // Core types live under "v1", grouped ones under "<group>/<version>".
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return path.join(modules, "@kubernetes-models", "prometheus-operator", apiVersion, kind + ".js");
  }
  return path.join(modules, "kubernetes-models", apiVersion, kind + ".js");
}

// Wraps a JSON value in read-recording proxies; `objects` collects {path, value, read}.
function track(value, where, objects) {
  if (value === null || typeof value !== "object") {
    return value;
  }
  const read = new Set();
  let target;
  if (Array.isArray(value)) {
    target = value.map((v, i) => track(v, `${where}[${i}]`, objects));
  } else {
    target = {};
    for (const [k, v] of Object.entries(value)) {
      target[k] = track(v, where ? `${where}.${k}` : k, objects);
    }
    objects.push({ where, value, read });
  }
  return new Proxy(target, {
    get(t, key, receiver) {
      if (typeof key === "string") {
        read.add(key);
      }
      return Reflect.get(t, key, receiver);
    },
  });
}

function unknownFields(objects) {
  const found = [];
  const unknownPaths = [];
  for (const { where, value, read } of objects) {
    if (read.size === 0 || unknownPaths.some((p) => where.startsWith(p))) {
      continue;
    }
    for (const key of Object.keys(value)) {
      if (!read.has(key)) {
        const at = where ? `${where}.${key}` : key;
        found.push(`unknown field ${at}`);
        unknownPaths.push(at);
      }
    }
  }
  return found;
}

let input = "";
for await (const chunk of process.stdin) {
  input += chunk;
}
const out = [];
for (const doc of JSON.parse(input)) {
  const entry = { kind: doc.kind, name: doc.metadata && doc.metadata.name, errors: [] };
  let model;
  try {
    model = await import(pathToFileURL(modelPath(String(doc.apiVersion), String(doc.kind))).href);
  } catch (e) {
    entry.errors.push(`no OpenAPI type for ${doc.apiVersion} ${doc.kind}`);
    out.push(entry);
    continue;
  }
  const objects = [];
  const tracked = track(doc, "", objects);
  try {
    // The model's validate() with the tracked manifest as `this` (the model constructor
    // would copy the manifest and lose the proxies).
    model[doc.kind].prototype.validate.call(tracked);
  } catch (e) {
    entry.errors.push(String(e && e.message ? e.message : e));
  }
  entry.errors.push(...unknownFields(objects));
  out.push(entry);
}
console.log(JSON.stringify(out));
