// matrix-js-sdk's SlidingSync (simplified sliding sync, MSC4186) against a running homeserver,
// driven by tests/interop/test_sliding_sync_js.py.
//
//   node tests/interop/js/sliding_sync.mjs <baseUrl> <scenario>
//
// Prints one line `@@RESULT@@ {json}` with what the SDK received and exits 0; on an error the JSON
// has `error` and the exit status is 1.

import "./setup.mjs"; // polyfills for Node 18/20 and the SDK's logging to stderr

const sdk = await import("matrix-js-sdk");
const { createClient } = sdk;
const { SlidingSync, SlidingSyncEvent, SlidingSyncState, ExtensionState } = await import(
    "matrix-js-sdk/lib/sliding-sync.js"
);

const PASSWORD = "interop password 1";
const STEP_TIMEOUT_MS = 20000;
const LONG_POLL_MS = 20000; // longer than any step: an answer within a step is a wake-up

const unique = () => `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function account(baseUrl, name) {
    const anon = createClient({ baseUrl });
    const username = `${name}-${unique()}`;
    let session;
    try {
        await anon.registerRequest({ username, password: PASSWORD });
    } catch (e) {
        if (e.httpStatus !== 401 || !e.data?.session) throw e;
        session = e.data.session;
    }
    const done = await anon.registerRequest({
        username,
        password: PASSWORD,
        initial_device_display_name: "js-sdk sliding sync",
        auth: { type: "m.login.dummy", session },
    });
    return createClient({ baseUrl, userId: done.user_id, accessToken: done.access_token, deviceId: done.device_id });
}

// An extension that asks for `name` with `request` and keeps every non-empty answer.
function extension(name, request, received) {
    let since;
    return {
        name: () => name,
        when: () => ExtensionState.PostProcess,
        onRequest: async () => (name === "to_device" ? { ...request, since } : request),
        onResponse: async (data) => {
            if (name === "to_device") since = data.next_batch;
            received[name].push(data);
        },
    };
}

async function scenarioListsSubscriptionExtensions(baseUrl) {
    const alice = await account(baseUrl, "alice");
    const bob = await account(baseUrl, "bob");
    const rooms = [];
    for (const name of ["first", "second", "third"]) {
        rooms.push((await alice.createRoom({ name, preset: "public_chat" })).room_id);
    }
    const subscribed = (await alice.createRoom({ name: "subscribed", topic: "sub topic" })).room_id;
    await bob.joinRoom(rooms[0]);
    await bob.sendTextMessage(rooms[0], "bob was here");
    // `subscribed` is now the third most active: outside the list's range [0, 1]
    await alice.sendTextMessage(rooms[2], "most recent");
    await alice.setAccountData("org.example.setting", { on: true });

    const received = { to_device: [], e2ee: [], account_data: [], receipts: [], typing: [] };
    const lists = new Map([
        [
            "all",
            {
                ranges: [[0, 1]],
                timeline_limit: 5,
                required_state: [
                    ["m.room.name", ""],
                    ["m.room.member", "$LAZY"],
                ],
            },
        ],
    ]);
    const subscription = { timeline_limit: 3, required_state: [["*", "*"]] };
    const ss = new SlidingSync(baseUrl, lists, subscription, alice, LONG_POLL_MS);
    ss.registerExtension(extension("to_device", { enabled: true }, received));
    ss.registerExtension(extension("e2ee", { enabled: true }, received));
    ss.registerExtension(extension("account_data", { enabled: true }, received));
    ss.registerExtension(extension("receipts", { enabled: true }, received));
    ss.registerExtension(extension("typing", { enabled: true }, received));
    ss.modifyRoomSubscriptions(new Set([subscribed]));

    const roomData = {};
    const responses = [];
    let wake = null;
    ss.on(SlidingSyncEvent.RoomData, (roomId, data) => {
        (roomData[roomId] ??= []).push({
            name: data.name,
            initial: data.initial,
            timeline: data.timeline.map((e) => e.content?.body ?? e.type),
            required_state: data.required_state.map((e) => [e.type, e.state_key]),
            joined_count: data.joined_count,
        });
    });
    ss.on(SlidingSyncEvent.Lifecycle, (state, resp, err) => {
        if (err) responses.push({ error: String(err) });
        if (state === SlidingSyncState.Complete && resp) {
            responses.push({ pos: resp.pos, rooms: Object.keys(resp.rooms), lists: resp.lists });
            if (wake) wake();
        }
    });
    const next = () => new Promise((resolve) => (wake = resolve));
    const first = next();
    const running = ss.start();
    await withTimeout(first, "the first sliding sync response");
    const firstList = ss.getListData("all");

    // the SDK now long-polls (20 s): a message and a to-device message must wake it at once
    const woken = next();
    const started = Date.now();
    await bob.sendTextMessage(rooms[0], "wake up");
    await bob.sendToDevice("org.example.ping", new Map([[alice.getUserId(), new Map([[alice.getDeviceId(), { n: 1 }]])]]));
    await withTimeout(woken, "the long poll to wake", 10000);
    // the to-device message may come in the same answer or the next one
    while (!received.to_device.some((d) => d.events.length)) {
        await withTimeout(next(), "the to-device message", 10000);
    }
    const wokeAfterMs = Date.now() - started;
    ss.stop();
    await running.catch(() => {});
    return {
        alice: alice.getUserId(),
        bob: bob.getUserId(),
        rooms,
        subscribed,
        firstList: { joinedCount: firstList?.joinedCount },
        responses,
        roomData,
        received,
        wokeAfterMs,
    };
}

const SCENARIOS = { lists_subscription_extensions: scenarioListsSubscriptionExtensions };

const [baseUrl, name] = process.argv.slice(2);
try {
    const run = SCENARIOS[name];
    if (!run) throw new Error(`unknown scenario ${name}`);
    const result = await run(baseUrl);
    process.stdout.write(`@@RESULT@@ ${JSON.stringify(result)}\n`);
    process.exit(0);
} catch (e) {
    process.stdout.write(`@@RESULT@@ ${JSON.stringify({ error: String(e?.stack ?? e), errcode: e?.errcode, http_status: e?.httpStatus })}\n`);
    process.exit(1);
}
