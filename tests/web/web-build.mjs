// Builds with the pinned esbuild of tests/web/package.json (installed by `make jstest`):
// * sizeOf(file): a module minified + gzipped, the way bench/web_client_size.py measures rtlib-client.js
//   (esbuild --bundle --minify --format=esm --platform=browser --target=es2022, then gzip -9);
// * queryCoreBundle(): rtlib/web/tanstack-query-core.js, the pinned @tanstack/query-core as one ES module for
//   the /app/query.html page (no build step at serve time). rtlib-query.test.mjs checks the committed file is
//   exactly this build; after changing the pin, write it again with `node tests/web/web-build.mjs`.
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import * as esbuild from "esbuild";

const HERE = dirname(fileURLToPath(import.meta.url));
export const WEB = join(HERE, "..", "..", "rtlib", "web");
export const VENDORED = join(WEB, "tanstack-query-core.js");
export const TOOL = `esbuild ${esbuild.version} --bundle --minify --format=esm --platform=browser ` +
  "--target=es2022, gzip -9";
const OPTIONS = { bundle: true, minify: true, format: "esm", platform: "browser", target: "es2022", write: false,
  logLevel: "warning" };

/** {minifiedBytes, gzipBytes} of one module; imports of other files are bundled unless listed in external. */
export async function sizeOf(file, external = []) {
  const out = await esbuild.build({ ...OPTIONS, entryPoints: [file], external });
  const code = out.outputFiles[0].contents;
  return { minifiedBytes: code.length, gzipBytes: gzipSync(code, { level: 9 }).length };
}

export function gzipSize(bytes) {
  return gzipSync(bytes, { level: 9 }).length;
}

/** The vendored query-core: what the page imports (QueryClient, QueryObserver, MutationObserver). */
export async function queryCoreBundle() {
  const require = createRequire(join(HERE, "package.json"));
  const pkgDir = dirname(require.resolve("@tanstack/query-core/package.json"));
  const { version, license } = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
  const licenseText = readFileSync(join(pkgDir, "LICENSE"), "utf8").trim();
  const banner = `/*! @tanstack/query-core ${version} (${license}), bundled by tests/web/web-build.mjs with esbuild ` +
    `${esbuild.version}: QueryClient, QueryObserver, MutationObserver.\n\n${licenseText}\n*/`;
  const out = await esbuild.build({
    ...OPTIONS, banner: { js: banner },
    stdin: { contents: 'export { QueryClient, QueryObserver, MutationObserver } from "@tanstack/query-core";\n',
      resolveDir: HERE, sourcefile: "query-core-entry.js" },
  });
  return { version, code: Buffer.from(out.outputFiles[0].contents) };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { version, code } = await queryCoreBundle();
  writeFileSync(VENDORED, code);
  console.log(`wrote ${VENDORED}: @tanstack/query-core ${version}, ${code.length} B (${gzipSize(code)} B gzipped)`);
}
