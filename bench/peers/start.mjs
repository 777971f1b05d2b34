// Starts browserless (bench/peers.py does, with its PORT, HOST, TOKEN,
// CONCURRENT and PLAYWRIGHT_BROWSERS_PATH) with only the routes whose
// browser is installed: Debian's Chromium, pointed at by the bench.
import { Browserless } from "@browserless.io/browserless";

const installed = new Set(["ChromiumCDP", "ChromiumPlaywright"]);
const server = new Browserless();
server.routeIsDisabled = (route) => Boolean(route.browser) && !installed.has(route.browser.name);
await server.start();
