// Drives a worker session with puppeteer-core through its automation
// endpoint and prints what it saw as one JSON line.
// usage: node puppeteer_drive.mjs ENDPOINT TOKEN BASE_URL
import puppeteer from "puppeteer-core";

const [endpoint, token, base] = process.argv.slice(2);
const browser = await puppeteer.connect({
  browserWSEndpoint: endpoint,
  headers: { Authorization: `Bearer ${token}` },
  defaultViewport: null,
  protocolTimeout: 20000,
});
const page = await browser.newPage();
await page.goto(`${base}/index.html`);
await page.click("#go");
const out = await page.$eval("#out", (el) => el.textContent);
const heading = await page.evaluate(() => document.getElementById("heading").textContent);
const shot = await page.screenshot({ encoding: "base64" });
const second = await browser.newPage();
await second.goto(`${base}/second.html`);
const titles = [];
for (const p of await browser.pages()) titles.push(await p.title());
const version = await browser.version();
await browser.close(); // sends Browser.close: must end this client only
console.log(JSON.stringify({ out, heading, shotBytes: shot.length, titles, version }));
