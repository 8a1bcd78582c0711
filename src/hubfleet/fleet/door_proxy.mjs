// The front door's configurable-http-proxy (hubfleet.fleet.door_proxy): CHP's own proxy — its routing table, REST
// API and websocket handling — started from CHP's library instead of its command line, for what the command line
// does not offer:
//   - a request path that is not valid percent-encoding (`/hubs/%ff/`) gets 400 Bad Request: CHP looks routes up by
//     the decoded path, and its lookup answers such a path with 500;
// and when it serves HTTPS (hubfleet.fleet.https):
//   - a plain-HTTP side on loopback next to the public HTTPS side, with the same routes: the fleet's own traffic
//     (hubs' services as users' servers reach them, requests forwarded after a hub woke) stays on this machine;
//   - Strict-Transport-Security on every answer of the public side;
//   - the certificate read again on SIGHUP: a renewal drops no connection (websockets of running kernels stay).
// Settings come as JSON in $HUBFLEET_DOOR_PROXY (no secrets); the API token in $CONFIGPROXY_AUTH_TOKEN.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const config = JSON.parse(process.env.HUBFLEET_DOOR_PROXY);
const secure = Boolean(config.cert);
const { ConfigurableProxy } = await import(pathToFileURL(path.join(config.chp, "lib", "configproxy.js")));
const { defaultLogger } = await import(pathToFileURL(path.join(config.chp, "lib", "log.js")));
const log = defaultLogger({ level: config.logLevel });

function certificate() {
  return { key: fs.readFileSync(config.key), cert: fs.readFileSync(config.cert), minVersion: "TLSv1.2" };
}

const proxy = new ConfigurableProxy({
  authToken: process.env.CONFIGPROXY_AUTH_TOKEN,
  defaultTarget: config.defaultTarget,
  ssl: secure ? certificate() : undefined,
  xfwd: true,
  includePrefix: true,
  prependPath: true,
  log,
});

// A path CHP cannot decode names no route: the client's mistake, answered 400 (CHP's own error page) instead of 500.
const handleProxy = proxy.handleProxy.bind(proxy);
proxy.handleProxy = (kind, req, res, ...rest) => {
  try {
    decodeURIComponent(new URL(req.url, "http://front-door").pathname);
  } catch (e) {
    if (!(e instanceof URIError || e instanceof TypeError)) throw e;
    proxy.handleProxyError(400, kind, req, res);
    return Promise.resolve();
  }
  return handleProxy(kind, req, res, ...rest);
};

if (secure && config.hsts > 0) {
  const hsts = `max-age=${config.hsts}`;
  proxy.proxy.on("proxyRes", (proxyRes, req) => {
    if (req.socket.encrypted) proxyRes.headers["strict-transport-security"] = hsts;
  });
}

const servers = [proxy.proxyServer, proxy.apiServer];
if (secure) {
  const internal = http.createServer({ keepAlive: true, keepAliveTimeout: 5000 }, (req, res) => {
    Promise.resolve(proxy.handleProxyWeb(req, res)).catch((e) => log.error("internal side: %s", e));
  });
  internal.on("upgrade", (req, socket, head) => {
    Promise.resolve(proxy.handleProxyWs(req, socket, head)).catch((e) => log.error("internal side: %s", e));
  });
  servers.push(internal);
  process.on("SIGHUP", () => {
    try {
      proxy.proxyServer.setSecureContext(certificate());
      log.info("certificate read again from %s", config.cert);
    } catch (e) {
      log.error("could not read the certificate again (keeping the old one): %s", e);
    }
  });
}
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

// As CHP's own command does once set up: a client that resets its connection mid-request is logged, not fatal.
process.on("uncaughtException", (e) => log.error("Uncaught Exception: %s", e.stack || e.message));

for (const server of servers) {
  server.on("error", (e) => {
    log.error("%s", e.message); // e.g. EADDRINUSE: the supervisor reports the exit and restarts it
    process.exit(1);
  });
}
proxy.proxyServer.listen(config.port, config.ip);
proxy.apiServer.listen(config.apiPort, "127.0.0.1");
if (secure) {
  servers[2].listen(config.internalPort, "127.0.0.1");
  log.info("HTTPS on %s:%s, plain HTTP on 127.0.0.1:%s, API on 127.0.0.1:%s", config.ip, config.port,
    config.internalPort, config.apiPort);
} else {
  log.info("HTTP on %s:%s, API on 127.0.0.1:%s", config.ip, config.port, config.apiPort);
}
