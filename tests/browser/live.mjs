// Drives real headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM) through
// rawlink's live view with Playwright. Usage: node live.mjs URL ARTIFACT_DIR
// Exits non-zero, naming the failed check, if any check fails. Run by tests/live_browser.rs.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const [url, outDir] = process.argv.slice(2);
if (!url || !outDir) {
  console.error("usage: node live.mjs URL ARTIFACT_DIR");
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const checks = [];
function check(ok, what) {
  checks.push(what);
  if (!ok) throw new Error(`FAILED: ${what}`);
  console.log(`ok - ${what}`);
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(fn, what, timeoutMs = 15000) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`FAILED: timed out waiting for ${what}`);
    await sleep(100);
  }
}

// Mean brightness of the live image, measured in the page from the decoded JPEG.
const meanOfView = (page) =>
  waitFor(() => page.evaluate(async () => {
    const img = document.getElementById("view");
    try {
      await img.decode();
    } catch {
      return null; // replaced by a newer frame while decoding: try again
    }
    if (!img.naturalWidth) return null;
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let s = 0;
    for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
    return { mean: s / (d.length / 4) / 3, seq: Number(img.dataset.seq) };
  }), "a decoded image");

const seqShown = (page) => page.evaluate(() => Number(document.getElementById("view").dataset.seq || -1));
const num = async (page, id) => Number((await page.textContent(`#${id}`)) || "NaN");

function pngSize(buf) {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (buf.length < 24 || !sig.every((b, i) => buf[i] === b)) return null;
  if (buf.toString("latin1", 12, 16) !== "IHDR") return null;
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let failed = null;
try {
  const ctx = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await ctx.newPage();
  const consoleErrors = [];
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  const resp = await page.goto(url, { waitUntil: "load" });
  check(resp && resp.status() === 200, "the page loads (HTTP 200)");

  await waitFor(() => seqShown(page).then((s) => s >= 0), "the first image");
  await page.waitForFunction(() => document.getElementById("view").naturalWidth > 0);
  check(await page.isVisible("#view"), "the live image appears");
  check(!(await page.isVisible("#waiting")), "the 'waiting for frames' notice is gone");
  check((await page.textContent("#conn")).includes("connected"), "the page shows the connection as connected");

  const shot1 = await page.screenshot({ path: path.join(outDir, "live-1.png") });
  const seq1 = await num(page, "seq");
  const shownSeq1 = await seqShown(page);
  await sleep(1000);
  const shot2 = await page.screenshot({ path: path.join(outDir, "live-2.png") });
  const seq2 = await num(page, "seq");
  const shownSeq2 = await seqShown(page);
  check(!shot1.equals(shot2), "two screenshots a second apart differ");
  // The picture alone: the decoded pixels of two shown frames, read back in the page.
  const pixels = () =>
    page.evaluate(async () => {
      const img = document.getElementById("view");
      const ok = await img.decode().then(() => true, () => false);
      if (!ok || !img.naturalWidth) return null;
      const c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      return { seq: Number(img.dataset.seq), data: Array.from(g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 97 === 0)) };
    });
  const p1 = await waitFor(pixels, "a decoded image");
  await waitFor(async () => (await seqShown(page)) > p1.seq, "a newer image");
  const p2 = await waitFor(pixels, "a decoded image");
  const changed = p1.data.filter((v, i) => v !== p2.data[i]).length;
  check(p2.seq > p1.seq && changed > p1.data.length / 10, `the picture itself changes from frame ${p1.seq} to ${p2.seq} (${changed} of ${p1.data.length} samples)`);
  check(seq2 > seq1, `the received seq advances (${seq1} -> ${seq2})`);
  check(shownSeq2 > shownSeq1, `the shown image's seq advances (${shownSeq1} -> ${shownSeq2})`);
  const fpsIn = await num(page, "fps-in");
  check(fpsIn > 5, `fps in is reported (${fpsIn})`);
  await waitFor(async () => (await num(page, "fps-shown")) > 0, "fps shown > 0");
  check(true, `fps shown is reported (${await num(page, "fps-shown")})`);
  const hist = await page.evaluate(() => {
    const c = document.getElementById("hist");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let lit = 0;
    for (let i = 3; i < d.length; i += 4) lit += d[i] > 0;
    return lit;
  });
  check(hist > 500, `the raw histogram is drawn (${hist} pixels)`);
  check((await page.textContent("#clip")).includes("clipped"), "clipped-pixel percentages are shown");

  // Pause holds the picture; resume lets it move again.
  await page.click("#pause");
  const held = await seqShown(page);
  await sleep(800);
  check((await seqShown(page)) === held, "pause holds the picture");
  // While paused, the downloads are of the frame on screen, not the newest one.
  // A download's bytes, as a length and an FNV-1a hash computed in the page.
  const digest = (url) => page.evaluate(async (u) => {
    const r = await fetch(u ?? document.getElementById("dl-raw").href);
    const b = new Uint8Array(await r.arrayBuffer());
    let h = 0x811c9dc5;
    for (const v of b) h = Math.imul(h ^ v, 0x01000193) >>> 0;
    return { status: r.status, name: r.headers.get("content-disposition"), bytes: b.length, hash: h };
  }, url);
  await waitFor(() => page.evaluate(() => document.getElementById("dl-raw").href.includes("pin=")), "a pinned download link");
  const heldDl = await digest();
  const newest = await page.evaluate(async () => Number((await (await fetch("/api/streams/0/stats")).json()).frame.seq));
  check(newest > held, `frames keep arriving while paused (${held} -> ${newest})`);
  check(heldDl.status === 200 && heldDl.name.includes(`frame_${String(held).padStart(6, "0")}.raw`),
    `a paused download is the frame shown, seq ${held} (${heldDl.status} ${heldDl.name})`);
  // By its bytes: fetched again after newer frames arrived, the paused download is the
  // same to the byte, and differs from the newest frame's (sim:scene's noise differs
  // from frame to frame).
  const again = await digest();
  const latest = await digest("/api/streams/0/frame.raw");
  check(again.hash === heldDl.hash && again.bytes === heldDl.bytes && latest.bytes === heldDl.bytes && latest.hash !== heldDl.hash,
    `the paused download's bytes stay the shown frame's, not the newest's (${heldDl.bytes} bytes, ${heldDl.hash.toString(16)} vs ${latest.hash.toString(16)})`);
  // The page's WebSocket drops and reconnects while paused: it names its pin and gets it
  // back, so the picture and the downloads stay on the frame it paused at.
  const pinOf = () => page.evaluate(() => new URL(document.getElementById("dl-raw").href).searchParams.get("pin"));
  const pinBefore = await pinOf();
  // Record the receiver's answers to the pauses sent from now on.
  await page.evaluate(() => {
    window.pausedAnswers = [];
    const send = WebSocket.prototype.send;
    WebSocket.prototype.send = function (d) {
      if (String(d).includes('"pause"')) {
        this.addEventListener("message", (e) => {
          if (typeof e.data === "string" && JSON.parse(e.data).type === "paused") window.pausedAnswers.push(JSON.parse(e.data));
        });
      }
      return send.call(this, d);
    };
    ws.close();
  });
  await waitFor(() => page.evaluate(() => window.pausedAnswers.length > 0), "the reconnected page's pause answered");
  const answer = await page.evaluate(() => window.pausedAnswers[0]);
  await sleep(200); // the page handling the same answer
  const afterReconnect = await digest();
  check(String(answer.pin) === pinBefore && answer.seq === held && (await pinOf()) === pinBefore &&
    (await seqShown(page)) === held && afterReconnect.hash === heldDl.hash,
    `a paused page that reconnects keeps its pin ${pinBefore} and frame ${held} (answer ${JSON.stringify(answer)}, shown seq ${await seqShown(page)})`);
  await page.click("#pause");
  check(!(await page.getAttribute("#dl-raw", "href")).includes("pin="), "resume points the downloads at the newest frame again");
  await waitFor(async () => (await seqShown(page)) > held, "the picture moving again after resume");
  check(true, "resume lets the picture move again");

  // Toggling a stage changes the picture: with the tone curve off the image is linear,
  // so much darker. Frame-to-frame change of the scene is measured first as the noise floor.
  const a = await meanOfView(page);
  await waitFor(async () => (await seqShown(page)) > a.seq, "another frame");
  const b = await meanOfView(page);
  const floor = Math.abs(b.mean - a.mean);
  await page.uncheck('input[data-stage="tone"]');
  await waitFor(
    () => page.evaluate(() => (document.getElementById("timings").textContent || "").includes("stages run") &&
      !document.getElementById("timings").rows[0].cells[1].textContent.includes("tone")),
    "a view processed without the tone stage",
  );
  const c = await meanOfView(page);
  await page.screenshot({ path: path.join(outDir, "live-tone-off.png") });
  const delta = Math.abs(c.mean - b.mean);
  check(delta > Math.max(8, 4 * floor), `toggling the tone stage changes the picture (mean ${b.mean.toFixed(1)} -> ${c.mean.toFixed(1)}, frame-to-frame ${floor.toFixed(1)})`);
  await page.check('input[data-stage="tone"]');

  // Switching the demosaic method reaches the ISP.
  await page.selectOption("#demosaic", "bilinear");
  await waitFor(
    () => page.evaluate(() => fetch("/api/streams/0/view").then((r) => r.json()).then((v) => v.settings.demosaic === "bilinear")),
    "a view processed with bilinear demosaic",
  );
  check(true, "switching the demosaic method reaches the ISP");
  await page.selectOption("#profile", "reference");
  await waitFor(
    () => page.evaluate(() => fetch("/api/streams/0/view").then((r) => r.json()).then((v) => v.settings.profile === "reference")),
    "a view processed with the reference profile",
  );
  check(true, "switching the ISP profile reaches the ISP");
  await page.click("#reset");

  // 1:1 zoom on a region.
  await page.check("#zoom");
  await page.click("#view", { position: { x: 100, y: 100 } });
  await page.waitForFunction(() => document.getElementById("zoom-img").naturalWidth === 256, null, { timeout: 15000 });
  check(await page.isVisible("#zoom-panel"), "the 1:1 zoom shows a 256x256 full-resolution crop");

  // PNG download: a valid PNG of the frame's size.
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click("#dl-png")]);
  const pngPath = path.join(outDir, "download.png");
  await dl.saveAs(pngPath);
  const size = pngSize(fs.readFileSync(pngPath));
  const geom = (await page.textContent("#geometry")).split("×").map((s) => Number(s.trim()));
  check(size !== null, `the PNG download is a PNG (${dl.suggestedFilename()})`);
  check(size.width === geom[0] && size.height === geom[1], `the PNG download is ${size.width}x${size.height}, the frame's size`);

  await page.screenshot({ path: path.join(outDir, "live-view.png") });
  check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(" | ") || "none"})`);
} catch (e) {
  failed = e;
} finally {
  await browser.close();
}
console.log(`screenshots: ${path.resolve(outDir)}`);
if (failed) {
  console.error(String(failed.stack || failed));
  process.exit(1);
}
console.log(`all ${checks.length} browser checks passed`);
