/** Test certificates made with openssl for each run: a private CA and a server certificate it signed. */

/** PEM texts: the CA's certificate, and the server's key and certificate (for `names` and 127.0.0.1). */
export type TestCertificates = { ca: string; key: string; cert: string };

async function openssl(args: string[], cwd: string): Promise<void> {
  const out = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Makes a CA and a server certificate for `names` (DNS) and 127.0.0.1, valid for a day. */
export async function makeCertificates(names: string[] = ["localhost"]): Promise<TestCertificates> {
  const dir = await Deno.makeTempDir({ prefix: "test_certs_" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  try {
    await openssl(
      ["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=Test CA"],
      dir,
    );
    await openssl(["req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${names[0]}`], dir);
    const san = [...names.map((n) => `DNS:${n}`), "IP:127.0.0.1"].join(",");
    await Deno.writeTextFile(`${dir}/ext.cnf`, `subjectAltName=${san}\nbasicConstraints=CA:FALSE\n`);
    await openssl([
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      "server.pem",
      "-days",
      "1",
      "-extfile",
      "ext.cnf",
    ], dir);
    const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
    return { ca: await read("ca.pem"), key: await read("server.key"), cert: await read("server.pem") };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
