// The deploy simulation (`npm test -- deploy`; needs DATABASE_URL of a migrated database, which
// `npm test` provides). No machine here reaches Supabase, so it rebuilds the deploy as closely as it can:
//
// 1. Upload: the pinned Supabase CLI runs `supabase functions deploy email-worker --use-api` against a
//    local HTTP server standing in for the Management API (selected with a CLI profile whose api_url
//    points at it) and the multipart upload it sends is captured: the metadata and every file.
// 2. Bundle: exactly those files, and nothing else, are written to an empty directory (no
//    node_modules, no package.json, no root deno.json unless the CLI sent one).
// 3. Run: tests/deploy/deployed_worker_check.ts starts the entrypoint there with the Deno the Edge
//    Runtime embeds (supabase/edge-runtime v1.74.0 is built on Deno 2.1.4, see its deno/Cargo.toml),
//    using the uploaded import map as its config, resolving npm: imports from the registry, with a
//    user worker's permissions instead of -A, and checks it end to end.
//
// Deno 2.1.4 comes from npm (package `deno`) into node_modules/.cache/edge-runtime-deno/, with its own
// DENO_DIR beside it, so a fresh clone needs only the npm registry, like `npm ci`.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const log = (m) => console.log(`[deploy] ${m}`);
const EDGE_RUNTIME = "v1.74.0";
const EDGE_DENO = "2.1.4";
const SLUG = "email-worker";
const PROJECT_REF = "abcdefghijklmnopqrst";
const cacheDir = path.join(root, "node_modules/.cache/edge-runtime-deno", EDGE_DENO);

/** Installs Deno EDGE_DENO from npm into the cache once; returns the path of its executable. */
function edgeDeno() {
  const pkg = path.join(cacheDir, "node_modules/deno/package.json");
  const installed = existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).version === EDGE_DENO;
  if (!installed) {
    log(
      `installing deno@${EDGE_DENO} (the Deno of edge-runtime ${EDGE_RUNTIME}) into ${path.relative(root, cacheDir)}`,
    );
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(path.join(cacheDir, "package.json"), JSON.stringify({ private: true }) + "\n");
    const npm = process.platform === "win32" ? "npm.cmd" : "npm";
    const r = spawnSync(npm, [
      "install",
      "--no-save",
      "--no-audit",
      "--no-fund",
      "--ignore-scripts",
      `deno@${EDGE_DENO}`,
    ], {
      cwd: cacheDir,
      stdio: "inherit",
    });
    if (r.status !== 0) throw new Error(`npm install deno@${EDGE_DENO} failed`);
  }
  // The package's postinstall only links the platform binary; resolve it the same way.
  const exe = createRequire(pkg)("./install_api.cjs").runInstall();
  const version = spawnSync(exe, ["--version"], { encoding: "utf8" }).stdout ?? "";
  if (!version.startsWith(`deno ${EDGE_DENO} `)) throw new Error(`expected deno ${EDGE_DENO}, got ${version}`);
  return exe;
}

/** Runs the pinned CLI's deploy against a local Management API; returns the captured upload. */
async function captureUpload() {
  const uploads = [];
  const requests = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      requests.push(`${req.method} ${req.url}`);
      const url = new URL(req.url, "http://api.local");
      if (req.method === "POST" && url.pathname === `/v1/projects/${PROJECT_REF}/functions/deploy`) {
        uploads.push({
          query: Object.fromEntries(url.searchParams),
          headers: req.headers,
          body: Buffer.concat(chunks),
        });
        res.writeHead(201, { "content-type": "application/json" });
        const now = Date.now();
        res.end(JSON.stringify({
          id: "00000000-0000-4000-8000-000000000000",
          slug: SLUG,
          name: SLUG,
          version: 1,
          status: "ACTIVE",
          created_at: now,
          updated_at: now,
        }));
        return;
      }
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ message: "not part of the simulation" }));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const home = mkdtempSync(path.join(os.tmpdir(), "deploy-sim-home-"));
  try {
    const profile = path.join(home, "profile.json");
    writeFileSync(
      profile,
      JSON.stringify({
        name: "deploy-sim",
        api_url: `http://127.0.0.1:${server.address().port}`,
        dashboard_url: `http://127.0.0.1:${server.address().port}/dashboard`,
        project_host: "supabase.co",
      }),
    );
    const env = { PATH: process.env.PATH, HOME: home, SUPABASE_ACCESS_TOKEN: `sbp_${randomBytes(20).toString("hex")}` };
    const args = ["functions", "deploy", SLUG, "--use-api", "--project-ref", PROJECT_REF, "--profile", profile];
    log(`supabase ${args.join(" ")}`);
    const cli = await new Promise((resolve) => {
      let out = "";
      const child = spawn(path.join(root, "node_modules/.bin/supabase"), args, { cwd: root, env });
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (out += d));
      const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ out, code });
      });
    });
    if (cli.code !== 0 || uploads.length !== 1) {
      throw new Error(`the CLI deploy failed (exit ${cli.code}, ${uploads.length} uploads):\n${cli.out}`);
    }
    const [upload] = uploads;
    const form = await new Response(upload.body, { headers: { "content-type": upload.headers["content-type"] } })
      .formData();
    const metadata = JSON.parse(String(form.get("metadata")));
    const files = [];
    for (const [name, value] of form.entries()) {
      if (name === "file") files.push({ path: value.name, bytes: Buffer.from(await value.arrayBuffer()) });
    }
    return { metadata, files, query: upload.query, requests, cliOutput: cli.out };
  } finally {
    server.close();
    rmSync(home, { recursive: true, force: true });
  }
}

/** Writes the uploaded files, and nothing else, into a fresh directory. */
function stage(files) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "deploy-sim-bundle-"));
  for (const f of files) {
    const target = path.resolve(dir, f.path);
    if (path.isAbsolute(f.path) || !target.startsWith(dir + path.sep)) throw new Error(`unsafe upload path ${f.path}`);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, f.bytes);
  }
  return dir;
}

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) throw new Error("DATABASE_URL must point at a migrated database (npm test sets it)");
const deno = path.join(root, "node_modules/.bin/deno");
const exe = edgeDeno();
const upload = await captureUpload();
log(`upload for slug=${upload.query.slug}: metadata ${JSON.stringify(upload.metadata)}`);
log(`${upload.files.length} files: ${upload.files.map((f) => f.path).join(", ")}`);
for (const key of ["entrypoint_path", "import_map_path"]) {
  if (!upload.files.some((f) => f.path === upload.metadata[key])) {
    throw new Error(`the upload does not contain its ${key} ${upload.metadata[key]}`);
  }
}
const dir = stage(upload.files);
let status = 1;
try {
  const r = spawnSync(deno, ["test", "-A", "--no-check=remote", "tests/deploy/deployed_worker_check.ts"], {
    cwd: root,
    stdio: "inherit",
    env: {
      ...process.env,
      DATABASE_URL: databaseUrl,
      EDGE_DENO: exe,
      EDGE_DENO_DIR: path.join(cacheDir, "deno_dir"),
      DEPLOY_DIR: dir,
      DEPLOY_METADATA: JSON.stringify(upload.metadata),
    },
  });
  status = r.status ?? 1;
} finally {
  rmSync(dir, { recursive: true, force: true });
}
log(status === 0 ? "the deployed bundle runs on the Edge Runtime's Deno" : "the deploy simulation FAILED");
process.exit(status);
