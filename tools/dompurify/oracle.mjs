// The CDP front end's sanitiser as a test oracle: DOMPurify (default config) on jsdom, one process per batch.
// stdin: a JSON array of HTML strings; stdout: a JSON array of {html, removed} in the same order, where
// `removed` lists what DOMPurify took out ("element:<tag>" or "attribute:<tag>[<name>]").
import { JSDOM } from 'jsdom';
import createDOMPurify from 'dompurify';

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const inputs = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const { window } = new JSDOM('<!doctype html><html><head></head><body></body></html>');
const purify = createDOMPurify(window);
const results = inputs.map((html) => {
  const out = purify.sanitize(html);
  const removed = purify.removed.map((r) =>
    r.element ? `element:${String(r.element.nodeName).toLowerCase()}`
      : `attribute:${String(r.from?.nodeName ?? '').toLowerCase()}[${r.attribute?.name}]`,
  );
  return { html: out, removed };
});
process.stdout.write(JSON.stringify({ dompurify: purify.version, results }));
