// Opens a page in headless Chromium (Debian's, through playwright-core) and prints the
// page's window.outcome as JSON once it is set. Usage: node run.mjs URL [TIMEOUT_MS]
import { chromium } from "playwright-core";

const [url, timeout = "20000"] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  chromiumSandbox: false,
  // As root on a machine without a network: no sandbox, no GPU, none of Chromium's own traffic.
  // The wss listeners' certificates come from the tests' own CA, which Chromium does not know.
  args: ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--ignore-certificate-errors"],
});
try {
  const page = await browser.newPage();
  const console_lines = [];
  page.on("console", (m) => console_lines.push(m.text()));
  await page.goto(url);
  await page.waitForFunction(() => window.outcome !== undefined, null, { timeout: Number(timeout) });
  const outcome = await page.evaluate(() => window.outcome);
  outcome.log = await page.evaluate(() => document.getElementById("log").textContent);
  outcome.console = console_lines;
  console.log(JSON.stringify(outcome));
} finally {
  await browser.close();
}
