// gah serve in a real browser: overview -> package -> cell -> log -> bug text, the feed
// parses, the API answers. Run by tests/tests/browser.rs against a server over the database
// `gah run` left; usage: node qa-pages.mjs BASE_URL SCREENSHOT_DIR
//
// Debian's chromium, started as the machine notes say it runs here: headless, no sandbox
// (root), no background networking (this machine's network is closed).
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';

const [base, shots] = process.argv.slice(2);
assert.ok(base && shots, 'usage: node qa-pages.mjs BASE_URL SCREENSHOT_DIR');
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const problems = [];
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
page.on('pageerror', (e) => problems.push(`page error: ${e}`));
page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.url()}`); });
const step = (what) => console.log(`browser: ${what}`);

// Overview: counts by status, with a success, a build failure and a test failure among them.
await page.goto(`${base}/`);
assert.equal(await page.locator('h1').innerText(), 'Overview');
const counts = await page.locator('#counts td').allInnerTexts();
step(`overview counts: ${counts.map((c) => c.replace('\n', '=')).join(', ')}`);
for (const status of ['success', 'build_failed', 'test_failed']) {
  assert.ok(counts.some((c) => c.startsWith(status)), `the overview counts no ${status}: ${counts}`);
}
await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });

// Search for the package, then its page: the matrix has USE rows and compiler columns.
await page.fill('form.search input[name=q]', 'bzip2');
await page.click('form.search button');
await page.waitForURL(/\/search\?/);
const firstCell = page.locator('table.list a[href^="/cell/"]').first();
assert.ok(await firstCell.count() > 0, 'the search finds bzip2');
await firstCell.click();
await page.waitForURL(/\/cell\/\d+$/);
await page.click('h1 a');
await page.waitForURL(/\/package\/app-arch\/bzip2$/);
const headers = await page.locator('table.matrix').first().locator('th').allInnerTexts();
assert.equal(headers[0], 'USE');
assert.ok(headers.includes('gcc') || headers.includes('clang'), `compiler columns: ${headers}`);
for (const status of ['success', 'build_failed', 'test_failed']) {
  assert.ok(await page.locator(`table.matrix td.s-${status}`).count() > 0, `the matrix shows no ${status} cell`);
}
await page.screenshot({ path: `${shots}/matrix.png`, fullPage: true });
step('package matrix: success, build_failed and test_failed cells');

// The build failure's cell: phase, highlighted error lines, the log, the bug text.
await page.locator('table.matrix td.s-build_failed a').first().click();
await page.waitForURL(/\/cell\/\d+$/);
assert.match(await page.locator('p.cellid').innerText(), /build_failed/);
assert.ok(await page.locator('pre.log .err').count() > 0, 'no error line highlighted in the excerpt');
const summary = await page.locator('input.bugsummary').inputValue();
assert.match(summary, /^app-arch\/bzip2-[^:]+: fails to \w+/, `bug summary: ${summary}`);
const comment = await page.locator('textarea.bugtext').inputValue();
assert.match(comment, /emerge --oneshot =app-arch\/bzip2-/);
step(`bug summary: ${summary}`);
await page.screenshot({ path: `${shots}/cell.png`, fullPage: true });
const logHref = await page.locator('#log a[download]').first().getAttribute('href');
const log = await page.request.get(`${base}${logHref}`);
assert.equal(log.status(), 200);
assert.match(log.headers()['content-disposition'], /^attachment/);
assert.match(await log.text(), /ERROR: app-arch\/bzip2/);
step(`whole log: ${(await log.body()).length} bytes`);

// The test failure's cell names its failing tests.
await page.goBack();
await page.locator('table.matrix td.s-test_failed a').first().click();
await page.waitForURL(/\/cell\/\d+$/);
assert.match(await page.locator('p.cellid').innerText(), /test_failed/);

// The dependency view draws the package in the middle.
await page.click('a[href$="/deps"]');
await page.waitForURL(/\/deps$/);
assert.equal(await page.locator('svg.depgraph rect.center').count(), 1);

// The feed parses as Atom in the browser's own XML parser (its entries: all three builds are
// in one snapshot, so nothing is newly failing here; qa/tests/web.rs checks entries); the API
// answers JSON.
const feed = await page.request.get(`${base}/feed.atom`);
assert.match(feed.headers()['content-type'], /application\/atom\+xml/);
const feedText = await feed.text();
const parsed = await page.evaluate((xml) => {
  const doc = new DOMParser().parseFromString(xml, 'application/xml');
  return { error: doc.querySelector('parsererror') !== null, root: doc.documentElement.localName };
}, feedText);
assert.deepEqual(parsed, { error: false, root: 'feed' });
const overview = await (await page.request.get(`${base}/api/overview`)).json();
assert.ok(overview.cells > 0 && overview.cells_by_status.success > 0, JSON.stringify(overview));
for (const path of ['/api/fails', '/api/blame', '/api/snapshots', '/api/search?q=bzip2', '/api/package/app-arch/bzip2']) {
  const r = await page.request.get(`${base}${path}`);
  assert.equal(r.status(), 200, path);
  await r.json();
}
step('feed parses, API answers');

assert.deepEqual(problems, [], 'the pages logged errors');
await browser.close();
console.log('browser: all checks passed');
