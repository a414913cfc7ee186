// Creates a blob container on Azurite with the emulator's well-known account key (SharedKey).
const crypto = require("crypto"), http = require("http");
const [port, container] = process.argv.slice(2);
const account = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const date = new Date().toUTCString(), version = "2021-08-06";
const toSign = ["PUT", "", "", "", "", "", "", "", "", "", "", "",
  `x-ms-date:${date}`, `x-ms-version:${version}`,
  `/${account}/${account}/${container}\nrestype:container`].join("\n");
const sig = crypto.createHmac("sha256", Buffer.from(key, "base64")).update(toSign, "utf8").digest("base64");
const req = http.request({ host: "127.0.0.1", port, method: "PUT", path: `/${account}/${container}?restype=container`,
  headers: { "x-ms-date": date, "x-ms-version": version, "Content-Length": 0, Authorization: `SharedKey ${account}:${sig}` } },
  (res) => { let b = ""; res.on("data", (d) => (b += d)); res.on("end", () => {
    if (res.statusCode === 201 || res.statusCode === 409) process.exit(0);
    console.error(`create container ${container}: HTTP ${res.statusCode} ${b}`); process.exit(1); }); });
req.on("error", (e) => { console.error(`create container ${container}: ${e.message}`); process.exit(1); });
req.end();
