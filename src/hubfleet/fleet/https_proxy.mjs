// The front door's configurable-http-proxy when it serves HTTPS (hubfleet.fleet.https): CHP's own proxy — its
// routing table, REST API and websocket handling — started from CHP's library instead of its command line, for
// three things the command line does not offer:
//   - a plain-HTTP side on loopback next to the public HTTPS side, with the same routes: the fleet's own traffic
//     (hubs' services as users' servers reach them, requests forwarded after a hub woke) stays on this machine;
//   - Strict-Transport-Security on every answer of the public side;
//   - the certificate read again on SIGHUP: a renewal drops no connection (websockets of running kernels stay).
// Settings come as JSON in $HUBFLEET_HTTPS_PROXY (no secrets); the API token in $CONFIGPROXY_AUTH_TOKEN.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const config = JSON.parse(process.env.HUBFLEET_HTTPS_PROXY);
const { ConfigurableProxy } = await import(pathToFileURL(path.join(config.chp, "lib", "configproxy.js")));
const { defaultLogger } = await import(pathToFileURL(path.join(config.chp, "lib", "log.js")));
const log = defaultLogger({ level: config.logLevel });

function certificate() {
  return { key: fs.readFileSync(config.key), cert: fs.readFileSync(config.cert), minVersion: "TLSv1.2" };
}

const proxy = new ConfigurableProxy({
  authToken: process.env.CONFIGPROXY_AUTH_TOKEN,
  defaultTarget: config.defaultTarget,
  ssl: certificate(),
  xfwd: true,
  includePrefix: true,
  prependPath: true,
  log,
});

if (config.hsts > 0) {
  const hsts = `max-age=${config.hsts}`;
  proxy.proxy.on("proxyRes", (proxyRes, req) => {
    if (req.socket.encrypted) proxyRes.headers["strict-transport-security"] = hsts;
  });
}

const internal = http.createServer({ keepAlive: true, keepAliveTimeout: 5000 }, (req, res) => {
  Promise.resolve(proxy.handleProxyWeb(req, res)).catch((e) => log.error("internal side: %s", e));
});
internal.on("upgrade", (req, socket, head) => {
  Promise.resolve(proxy.handleProxyWs(req, socket, head)).catch((e) => log.error("internal side: %s", e));
});

process.on("SIGHUP", () => {
  try {
    proxy.proxyServer.setSecureContext(certificate());
    log.info("certificate read again from %s", config.cert);
  } catch (e) {
    log.error("could not read the certificate again (keeping the old one): %s", e);
  }
});
process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

// As CHP's own command does once set up: a client that resets its connection mid-request is logged, not fatal.
process.on("uncaughtException", (e) => log.error("Uncaught Exception: %s", e.stack || e.message));

for (const server of [proxy.proxyServer, proxy.apiServer, internal]) {
  server.on("error", (e) => {
    log.error("%s", e.message); // e.g. EADDRINUSE: the supervisor reports the exit and restarts it
    process.exit(1);
  });
}
proxy.proxyServer.listen(config.port, config.ip);
proxy.apiServer.listen(config.apiPort, "127.0.0.1");
internal.listen(config.internalPort, "127.0.0.1");
log.info("HTTPS on %s:%s, plain HTTP on 127.0.0.1:%s, API on 127.0.0.1:%s", config.ip, config.port,
  config.internalPort, config.apiPort);
