// One-off, reproducible extraction of the public XSS corpora under tests/fixtures/ (not run by the tests).
// Usage: node extract_corpora.mjs <DOMPurify git dir> <H5SC git dir> <PayloadsAllTheThings git dir> <out dir>
// Each argument is a git directory (bare clone or .git) of the upstream repository; HEAD is read.
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

const [domDir, h5Dir, patDir, outDir] = process.argv.slice(2);
const git = (dir, ...args) => execFileSync('git', ['--git-dir', dir, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
const head = (dir) => git(dir, 'rev-parse', 'HEAD').trim();
const show = (dir, path) => git(dir, 'show', `HEAD:${path}`);
const uniq = (xs) => [...new Set(xs.filter((x) => typeof x === 'string' && x.trim() !== ''))];
const tmp = mkdtempSync(join(tmpdir(), 'xss-corpora-'));

function write(name, meta, payloads) {
  const body = { ...meta, count: payloads.length, payloads };
  writeFileSync(join(outDir, name), JSON.stringify(body, null, 1) + '\n');
  console.log(name, payloads.length);
}

// 1. DOMPurify's own test fixtures (payload strings only; their expected outputs assume DOMPurify's wider allowlist).
{
  writeFileSync(join(tmp, 'expect.mjs'), show(domDir, 'test/fixtures/expect.mjs'));
  const fixtures = (await import(join(tmp, 'expect.mjs'))).default;
  write(
    'xss_dompurify_fixtures.json',
    {
      source: 'cure53/DOMPurify, test/fixtures/expect.mjs (the "payload" field of every fixture)',
      url: 'https://github.com/cure53/DOMPurify/blob/main/test/fixtures/expect.mjs',
      commit: head(domDir),
      licence: 'DOMPurify is dual licensed: Apache License 2.0 OR Mozilla Public License 2.0 (used here under MPL-2.0: this file is an unmodified extract and stays under MPL-2.0)',
    },
    uniq(fixtures.map((f) => f.payload)),
  );
}

// 2. HTML5 Security Cheatsheet (html5sec.org): the vectors of items.js with payloads.js' placeholders filled in.
{
  const require = createRequire(import.meta.url);
  writeFileSync(join(tmp, 'items.cjs'), show(h5Dir, 'items.js'));
  writeFileSync(join(tmp, 'payloads.cjs'), show(h5Dir, 'payloads.js'));
  const items = require(join(tmp, 'items.cjs'));
  const payloads = require(join(tmp, 'payloads.cjs'));
  const fill = (s) => s.replace(/%([a-z0-9_]+)%/g, (m, k) => (k in payloads ? payloads[k] : m));
  write(
    'xss_html5sec.json',
    {
      source: 'cure53/H5SC, the HTML5 Security Cheatsheet (https://html5sec.org), items.js "data" with the placeholders of payloads.js substituted',
      url: 'https://github.com/cure53/H5SC/blob/master/items.js',
      commit: head(h5Dir),
      licence: 'Mozilla Public License 2.0 (the repository LICENSE); this derived file stays under MPL-2.0',
    },
    uniq(items.map((i) => fill(i.data))),
  );
}

// 3. PayloadsAllTheThings "XSS Injection": code blocks of its pages and its intruder word lists (lines with markup).
{
  const pages = ['README.md', '1 - XSS Filter Bypass.md', '2 - XSS Polyglot.md', '3 - XSS Common WAF Bypass.md'];
  const lists = [
    'BRUTELOGIC-XSS-STRINGS.txt', 'IntrudersXSS.txt', 'JHADDIX_XSS.txt', 'MarioXSSVectors.txt', 'RSNAKE_XSS.txt',
    'XSSDetection.txt', 'XSS_Polyglots.txt', 'xss_alert.txt', 'xss_payloads_quick.txt',
    'port_swigger_xss_cheatsheet_event_handlers.txt',
  ];
  const out = [];
  for (const p of pages) {
    const md = show(patDir, `XSS Injection/${p}`);
    for (const block of md.matchAll(/```[a-z]*\n([\s\S]*?)```/g)) {
      for (const line of block[1].split('\n')) if (line.includes('<') || /script:/i.test(line)) out.push(line);
    }
  }
  for (const l of lists) {
    for (const line of show(patDir, `XSS Injection/Intruders/${l}`).split(/\r?\n/)) {
      if (line.includes('<') || /script:/i.test(line)) out.push(line);
    }
  }
  write(
    'xss_payloadsallthethings.json',
    {
      source: 'swisskyrepo/PayloadsAllTheThings, "XSS Injection" (code blocks of README.md and pages 1-3; Intruders/*.txt lines holding markup or a script: URL; the PortSwigger XSS cheat sheet event-handler list included)',
      url: 'https://github.com/swisskyrepo/PayloadsAllTheThings/tree/master/XSS%20Injection',
      commit: head(patDir),
      licence: 'MIT License, Copyright (c) 2019 Swissky (the repository LICENSE)',
    },
    uniq(out),
  );
}
