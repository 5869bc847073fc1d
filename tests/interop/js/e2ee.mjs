// End-to-end encryption with matrix-js-sdk's Rust crypto (WebAssembly) against a running homeserver,
// driven by tests/interop/test_e2ee_js.py and test_e2ee_nio.py.
//
//   node tests/interop/js/e2ee.mjs <baseUrl> js_to_js   one scenario; prints `@@RESULT@@ {json}`
//   node tests/interop/js/e2ee.mjs <baseUrl> peer       a js-sdk user driven over stdin (see `peer`)
//
// As in scenario.mjs: stdout carries only the protocol lines, the SDK logs to stderr (warnings and
// errors unless INTEROP_JS_DEBUG is set), an error gives `{"error": ...}` and exit status 1.

import "./setup.mjs"; // polyfills for Node 18/20 and the SDK's logging to stderr

const sdk = await import("matrix-js-sdk");
const { ClientEvent, createClient } = sdk;
const { decodeRecoveryKey } = await import("matrix-js-sdk/lib/crypto-api/index.js");
const { RustBackupManager } = await import("matrix-js-sdk/lib/rust-crypto/backup.js");

// The backup upload loop waits a random 0-10 s before its first upload (to spread load over many
// clients); the SDK documents lowering it for tests.
RustBackupManager.maxBackupLoopStartDelayMillis = 50;

const PASSWORD = "interop password 1";
const STEP_TIMEOUT_MS = 20000;
const POLL_MS = 50;
const MEGOLM = "m.megolm.v1.aes-sha2";

const unique = () => `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Poll `check` (sync or async) until it returns a truthy value; that value. Bounded by a deadline.
async function until(check, what, ms = STEP_TIMEOUT_MS) {
    const deadline = Date.now() + ms;
    for (;;) {
        const value = await check();
        if (value) return value;
        if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
        await new Promise((r) => setTimeout(r, POLL_MS));
    }
}

// Every request a client makes, with the status and (for errors) the errcode of the answer.
function recordingFetch(requests) {
    return async (input, init) => {
        const url = new URL(input instanceof Request ? input.url : String(input));
        const resp = await globalThis.fetch(input, init);
        let errcode;
        if (resp.status >= 400) {
            errcode = await resp
                .clone()
                .json()
                .then((body) => body.errcode)
                .catch(() => undefined);
        }
        requests.push({ endpoint: `${(init && init.method) || "GET"} ${url.pathname}`, status: resp.status, errcode });
        return resp;
    };
}

// The endpoints requests went to, with room, user and event ids and transaction ids left out.
function endpoints(requests) {
    const shape = (e) =>
        e
            .replace(/\/(?:%21|!|%40|@|%24|\$)[^/]*/g, "/{id}")
            .replace(/\/(send|sendToDevice)\/([^/]+)\/[^/]+$/, "/$1/$2/{txnId}")
            .replace(/(m\.secret_storage\.key)\.[^/]+$/, "$1.{keyId}")
            .replace(/(room_keys\/keys\/\{id\})\/[^/]+$/, "$1/{sessionId}");
    return [...new Set(requests.map((r) => shape(r.endpoint)))].sort();
}

// Registration as Element does it: without auth first (401 with a session), then m.login.dummy.
async function register(baseUrl, username) {
    const anon = createClient({ baseUrl });
    let session;
    try {
        await anon.registerRequest({ username, password: PASSWORD });
        throw new Error("registration succeeded without interactive auth");
    } catch (e) {
        if (e.httpStatus !== 401 || !e.data || !e.data.session) throw e;
        session = e.data.session;
    }
    await anon.registerRequest({ username, password: PASSWORD, auth: { type: "m.login.dummy", session } });
}

// A logged-in client with Rust crypto in memory. `secrets.recoveryKey` (the encoded recovery key, as a
// user would type it) answers the SDK's requests for the secret-storage key.
async function loginWithCrypto(baseUrl, username, requests, secrets = {}) {
    const anon = createClient({ baseUrl });
    const resp = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
        initial_device_display_name: `js-sdk ${username}`,
    });
    const client = createClient({
        baseUrl,
        accessToken: resp.access_token,
        userId: resp.user_id,
        deviceId: resp.device_id,
        fetchFn: recordingFetch(requests),
        cryptoCallbacks: {
            getSecretStorageKey: async ({ keys }) => {
                if (!secrets.recoveryKey) return null;
                return [Object.keys(keys)[0], decodeRecoveryKey(secrets.recoveryKey)];
            },
        },
    });
    await client.initRustCrypto({ useIndexedDB: false });
    return client;
}

async function newUser(baseUrl, prefix, requests, secrets) {
    const username = `${prefix}-${unique()}`;
    await register(baseUrl, username);
    return { username, client: await loginWithCrypto(baseUrl, username, requests, secrets) };
}

async function started(client) {
    const prepared = new Promise((resolve, reject) => {
        const onSync = (state, _prev, data) => {
            if (state === "PREPARED" || state === "SYNCING") {
                client.off(ClientEvent.Sync, onSync);
                resolve();
            } else if (state === "ERROR") {
                client.off(ClientEvent.Sync, onSync);
                reject(new Error(`sync error: ${data && data.error ? data.error.message : "unknown"}`));
            }
        };
        client.on(ClientEvent.Sync, onSync);
    });
    await client.startClient({ initialSyncLimit: 20 });
    await withTimeout(prepared, `${client.getUserId()}'s first sync`);
    return client;
}

// Cross-signing keys upload as Element does it: without auth first, the password if the server asks.
function authWithPassword(client) {
    return async (makeRequest) => {
        try {
            await makeRequest(null);
        } catch (e) {
            if (e.httpStatus !== 401 || !e.data || !e.data.session) throw e;
            await makeRequest({
                type: "m.login.password",
                identifier: { type: "m.id.user", user: client.getUserId() },
                password: PASSWORD,
                session: e.data.session,
            });
        }
    };
}

function membership(client, roomId, userId) {
    const room = client.getRoom(roomId);
    const member = room && room.getMember(userId);
    return member ? member.membership : undefined;
}

async function joinWhenInvited(client, roomId) {
    await until(() => membership(client, roomId, client.getUserId()) === "invite", `${client.getUserId()}'s invite`);
    await client.joinRoom(roomId);
    await until(() => membership(client, roomId, client.getUserId()) === "join", `${client.getUserId()} joined`);
}

const encryptionState = { type: "m.room.encryption", state_key: "", content: { algorithm: MEGOLM } };

async function createEncryptedRoom(client, invite, name) {
    const { room_id: roomId } = await client.createRoom({ name, invite, initial_state: [encryptionState] });
    await until(() => client.getRoom(roomId), `${name} in ${client.getUserId()}'s sync`);
    return roomId;
}

// Send once the sender's client sees every one of `members` joined (it shares the room key with the
// members it knows of), and once it knows the room is encrypted.
async function sendEncrypted(client, roomId, members, body) {
    await until(() => members.every((u) => membership(client, roomId, u) === "join"), `members of ${roomId}`);
    await until(() => client.getCrypto().isEncryptionEnabledInRoom(roomId), `${roomId} encrypted for the sender`);
    const { event_id: eventId } = await client.sendMessage(roomId, { msgtype: "m.text", body });
    return eventId;
}

function findEvent(client, roomId, eventId) {
    const room = client.getRoom(roomId);
    return room ? room.findEventById(eventId) : undefined;
}

// What a client made of an event: its wire type, and the plaintext once decrypted.
function described(event) {
    return {
        event_id: event.getId(),
        sender: event.getSender(),
        wire_type: event.getWireType(),
        type: event.getType(),
        body: event.getContent().body,
        decryption_failure: event.decryptionFailureReason || null,
    };
}

// Wait until `client` has decrypted the event whose plaintext body is `body` (in the live timeline).
async function receiveDecrypted(client, roomId, body) {
    const event = await until(() => {
        const room = client.getRoom(roomId);
        if (!room) return null;
        return room
            .getLiveTimeline()
            .getEvents()
            .find((e) => e.getType() === "m.room.message" && !e.isDecryptionFailure() && e.getContent().body === body);
    }, `${client.getUserId()} to decrypt "${body}"`);
    return described(event);
}

// The event as the server stores it: the ciphertext, never the plaintext.
async function serverCopy(client, roomId, eventId) {
    const raw = await client.fetchRoomEvent(roomId, eventId);
    return { type: raw.type, algorithm: raw.content.algorithm, has_body: "body" in raw.content };
}

async function backupCount(client) {
    const info = await client.http.authedRequest("GET", "/room_keys/version");
    const keys = await client.http.authedRequest("GET", "/room_keys/keys", { version: info.version });
    let sessions = 0;
    for (const room of Object.values(keys.rooms)) sessions += Object.keys(room.sessions).length;
    return { version: info.version, algorithm: info.algorithm, count: info.count, sessions };
}

const scenarios = {
    // Two js-sdk users in an encrypted room, messages both ways; alice sets up cross-signing, secret
    // storage and key backup; her second device verifies itself with the recovery key and restores
    // from the backup a message it never had the key for.
    async js_to_js(baseUrl) {
        const requests = [];
        const secrets = {};
        const { username: aliceName, client: alice } = await newUser(baseUrl, "alice", requests, secrets);
        const { client: bob } = await newUser(baseUrl, "bob", requests);
        const clients = [alice, bob];
        try {
            await started(alice);
            await started(bob);
            const aliceCrypto = alice.getCrypto();

            // Cross-signing, then secret storage with a generated recovery key and a new key backup.
            await aliceCrypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: authWithPassword(alice) });
            const generated = await aliceCrypto.createRecoveryKeyFromPassphrase();
            secrets.recoveryKey = generated.encodedPrivateKey;
            await aliceCrypto.bootstrapSecretStorage({
                createSecretStorageKey: async () => generated,
                setupNewSecretStorage: true,
                setupNewKeyBackup: true,
            });
            const crossSigning = await aliceCrypto.getCrossSigningStatus();
            const backupVersion = await until(() => aliceCrypto.getActiveSessionBackupVersion(), "an active backup");

            // The encrypted room and one message each way.
            const roomId = await createEncryptedRoom(alice, [bob.getUserId()], "js e2ee");
            await joinWhenInvited(bob, roomId);
            const members = [alice.getUserId(), bob.getUserId()];
            const fromAlice = `secret from alice ${unique()}`;
            const aliceEventId = await sendEncrypted(alice, roomId, members, fromAlice);
            const bobGot = await receiveDecrypted(bob, roomId, fromAlice);
            const fromBob = `secret from bob ${unique()}`;
            const bobEventId = await sendEncrypted(bob, roomId, members, fromBob);
            const aliceGot = await receiveDecrypted(alice, roomId, fromBob);
            const stored = await serverCopy(bob, roomId, aliceEventId);

            // Both room keys (alice's outbound session, bob's inbound one) reach the server's backup.
            const backup = await until(async () => {
                const b = await backupCount(alice);
                return b.sessions >= 2 && b.count === b.sessions ? b : null;
            }, "two room keys in the server-side backup");

            // alice's second device: it has no key for the old messages.
            const alice2 = await loginWithCrypto(baseUrl, aliceName, requests, secrets);
            clients.push(alice2);
            await started(alice2);
            const crypto2 = alice2.getCrypto();
            const before = await until(() => {
                const e = findEvent(alice2, roomId, aliceEventId);
                return e && e.isDecryptionFailure() ? described(e) : null;
            }, "the second device to fail to decrypt the old message");
            const verifiedBefore = (await crypto2.getDeviceVerificationStatus(alice.getUserId(), alice2.getDeviceId()))
                .crossSigningVerified;

            // As Element does on a new login: does the account have cross-signing keys? (For our own
            // user the SDK re-queries the server, so the public keys are known before the import.)
            const hasCrossSigning = await crypto2.userHasCrossSigningKeys();
            // The recovery key unlocks secret storage: the cross-signing keys (the device signs itself)...
            await crypto2.bootstrapCrossSigning({});
            const ownStatus = await until(async () => {
                const s = await crypto2.getDeviceVerificationStatus(alice.getUserId(), alice2.getDeviceId());
                return s && s.crossSigningVerified ? s : null;
            }, "the second device to see itself cross-signed");
            // ...which the first device, and bob, learn through /sync's device_lists and /keys/query.
            const seenByFirst = await until(async () => {
                const s = await aliceCrypto.getDeviceVerificationStatus(alice.getUserId(), alice2.getDeviceId());
                return s && s.crossSigningVerified ? s : null;
            }, "the first device to see the second one cross-signed");
            const seenByBob = await until(async () => {
                const s = await bob.getCrypto().getDeviceVerificationStatus(alice.getUserId(), alice2.getDeviceId());
                return s && s.signedByOwner ? s : null;
            }, "bob to see alice's second device signed by her");

            // ...and the backup decryption key: restore the backup, and the old messages decrypt.
            await crypto2.loadSessionBackupPrivateKeyFromSecretStorage();
            const restored = await crypto2.restoreKeyBackup();
            const after = await until(() => {
                const e = findEvent(alice2, roomId, aliceEventId);
                return e && !e.isDecryptionFailure() && e.getType() === "m.room.message" ? described(e) : null;
            }, "the second device to decrypt the old message after the restore");
            const afterBob = await until(() => {
                const e = findEvent(alice2, roomId, bobEventId);
                return e && !e.isDecryptionFailure() && e.getType() === "m.room.message" ? described(e) : null;
            }, "the second device to decrypt bob's old message after the restore");

            // One-time keys run out: someone claims all of bob's. The server must say so (a count of 0,
            // not a missing count) for the Rust crypto to upload new ones.
            const claimedKeys = new Set();
            const claimBody = { one_time_keys: { [bob.getUserId()]: { [bob.getDeviceId()]: "signed_curve25519" } } };
            for (let i = 0; i < 200; i++) {
                const claimed = await alice.http.authedRequest("POST", "/keys/claim", undefined, claimBody);
                const keys = claimed.one_time_keys[bob.getUserId()][bob.getDeviceId()];
                const [[keyId, key]] = Object.entries(keys);
                if (key.fallback) break;
                claimedKeys.add(keyId);
            }
            const countNow = async () =>
                (await bob.http.authedRequest("POST", "/keys/upload", undefined, {})).one_time_key_counts
                    .signed_curve25519 || 0;
            const countAfterClaims = await countNow();
            await alice.sendMessage(roomId, { msgtype: "m.text", body: "wake bob's sync" });
            const replenished = await until(async () => (await countNow()) || null, "bob to upload new one-time keys");

            // MSC3814: what the SDK asks the server, the question Element asks before using dehydration.
            const dehydrationSupported = await aliceCrypto.isDehydrationSupported();

            return {
                alice: alice.getUserId(),
                bob: bob.getUserId(),
                alice_devices: [alice.getDeviceId(), alice2.getDeviceId()],
                room_id: roomId,
                room_encrypted: await aliceCrypto.isEncryptionEnabledInRoom(roomId),
                sent: { alice: fromAlice, bob: fromBob, alice_event_id: aliceEventId, bob_event_id: bobEventId },
                bob_received: bobGot,
                alice_received: aliceGot,
                server_copy: stored,
                cross_signing: {
                    public_keys_on_device: crossSigning.publicKeysOnDevice,
                    private_keys_in_secret_storage: crossSigning.privateKeysInSecretStorage,
                    ready: await aliceCrypto.isCrossSigningReady(),
                },
                secret_storage_ready: await aliceCrypto.isSecretStorageReady(),
                backup_version: backupVersion,
                backup,
                second_device: {
                    before_restore: before,
                    cross_signing_verified_before: verifiedBefore,
                    account_has_cross_signing: hasCrossSigning,
                    own_status: { cross_signing_verified: ownStatus.crossSigningVerified },
                    seen_by_first: { cross_signing_verified: seenByFirst.crossSigningVerified },
                    seen_by_bob: { signed_by_owner: seenByBob.signedByOwner },
                    restored: { total: restored.total, imported: restored.imported },
                    after_restore: after,
                    bob_message_after_restore: afterBob,
                },
                one_time_keys: {
                    claimed: claimedKeys.size,
                    count_after_claims: countAfterClaims,
                    count_after_replenish: replenished,
                },
                dehydration: {
                    supported: dehydrationSupported,
                    requests: requests.filter((p) => p.endpoint.includes("msc3814")).map((p) => p.endpoint),
                },
                unrecognized: endpoints(requests.filter((p) => p.errcode === "M_UNRECOGNIZED")),
                endpoints: endpoints(requests),
            };
        } finally {
            for (const c of clients) c.stopClient();
        }
    },
};

// One js-sdk user driven over stdin, for the tests that pair it with matrix-nio. It prints
// `@@READY@@ {"user_id", "device_id"}`, then answers each JSON command line with one
// `@@REPLY@@ {json}` line (`{"error": ...}` if the command failed):
//   {"cmd": "create_room", "invite": [user ids]}      -> {"room_id"} (encrypted)
//   {"cmd": "join", "room_id"}                          waits for the invite, joins
//   {"cmd": "send", "room_id", "body", "members"}      -> {"event_id"} once it sees `members` joined
//   {"cmd": "receive", "room_id", "body"}              -> the decrypted event
//   {"cmd": "stop"}
async function peer(baseUrl) {
    const requests = [];
    const { client } = await newUser(baseUrl, "carol", requests);
    await started(client);
    const reply = (value) => process.stdout.write(`@@REPLY@@ ${JSON.stringify(value)}\n`);
    process.stdout.write(`@@READY@@ ${JSON.stringify({ user_id: client.getUserId(), device_id: client.getDeviceId() })}\n`);
    const commands = {
        async create_room(c) {
            return { room_id: await createEncryptedRoom(client, c.invite || [], "js peer room") };
        },
        async join(c) {
            await joinWhenInvited(client, c.room_id);
            return { joined: c.room_id };
        },
        async send(c) {
            return { event_id: await sendEncrypted(client, c.room_id, c.members || [], c.body) };
        },
        async receive(c) {
            return await receiveDecrypted(client, c.room_id, c.body);
        },
    };
    const readline = await import("node:readline");
    const lines = readline.createInterface({ input: process.stdin });
    try {
        for await (const line of lines) {
            if (!line.trim()) continue;
            const c = JSON.parse(line);
            if (c.cmd === "stop") break;
            try {
                if (!commands[c.cmd]) throw new Error(`unknown command ${c.cmd}`);
                reply(await withTimeout(commands[c.cmd](c), c.cmd, c.timeout_ms || STEP_TIMEOUT_MS));
            } catch (e) {
                reply({ error: String(e && e.message ? e.message : e) });
            }
        }
    } finally {
        client.stopClient();
    }
}

const [baseUrl, name] = process.argv.slice(2);
if (!baseUrl || !(scenarios[name] || name === "peer")) {
    process.stderr.write(`usage: node e2ee.mjs <baseUrl> <${[...Object.keys(scenarios), "peer"].join("|")}>\n`);
    process.exit(2);
}
if (name === "peer") {
    try {
        await peer(baseUrl);
        process.exit(0);
    } catch (e) {
        process.stdout.write(`@@READY@@ ${JSON.stringify({ error: String(e && e.message ? e.message : e) })}\n`);
        process.exit(1);
    }
}
let status = 0;
let result;
try {
    result = await withTimeout(scenarios[name](baseUrl), `scenario ${name}`, 100000);
} catch (e) {
    status = 1;
    result = {
        error: String(e && e.message ? e.message : e),
        errcode: e && e.errcode,
        http_status: e && e.httpStatus,
        stack: e && e.stack,
    };
}
process.stdout.write(`@@RESULT@@ ${JSON.stringify(result)}\n`);
process.exit(status);
