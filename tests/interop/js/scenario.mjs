// matrix-js-sdk scenarios against a running homeserver, driven by tests/interop/test_js_sdk.py.
//
//   node tests/interop/js/scenario.mjs <baseUrl> <scenario>
//
// Prints one line `@@RESULT@@ {json}` on stdout with what the clients received (the Python test
// asserts on it) and exits 0; on an error the JSON has `error` and the exit status is 1. The SDK's
// own logging goes to stderr (only warnings and errors unless INTEROP_JS_DEBUG is set).

import "./setup.mjs"; // polyfills for Node 18/20 and the SDK's logging to stderr

const sdk = await import("matrix-js-sdk");
const { ClientEvent, RoomEvent, Direction, createClient } = sdk;

const PASSWORD = "interop password 1";
const STEP_TIMEOUT_MS = 20000;

function withTimeout(promise, what, ms = STEP_TIMEOUT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const unique = () => `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;

// Registration as Element does it: first without auth (401 with flows and a session), then the
// m.login.dummy stage with that session.
async function register(baseUrl, username) {
    const anon = createClient({ baseUrl });
    let challenge;
    try {
        await anon.registerRequest({ username, password: PASSWORD, initial_device_display_name: "js-sdk" });
        throw new Error("registration succeeded without interactive auth");
    } catch (e) {
        if (e.httpStatus !== 401 || !e.data || !e.data.session) throw e;
        challenge = e.data;
    }
    const flows = challenge.flows.map((f) => f.stages);
    if (!flows.some((stages) => stages.length === 1 && stages[0] === "m.login.dummy")) {
        throw new Error(`no m.login.dummy flow offered: ${JSON.stringify(flows)}`);
    }
    const done = await anon.registerRequest({
        username,
        password: PASSWORD,
        initial_device_display_name: "js-sdk",
        auth: { type: "m.login.dummy", session: challenge.session },
    });
    return { userId: done.user_id, flows };
}

async function login(baseUrl, username) {
    const anon = createClient({ baseUrl });
    const flows = await anon.loginFlows();
    const resp = await anon.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: username },
        password: PASSWORD,
        initial_device_display_name: "js-sdk login",
    });
    const client = createClient({
        baseUrl,
        accessToken: resp.access_token,
        userId: resp.user_id,
        deviceId: resp.device_id,
    });
    return { client, login: resp, flows: flows.flows.map((f) => f.type) };
}

async function newUser(baseUrl, prefix) {
    const username = `${prefix}-${unique()}`;
    await register(baseUrl, username);
    return (await login(baseUrl, username)).client;
}

// startClient and wait for the first completed sync.
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

// Resolve with the first timeline event in `roomId` that `match` accepts (live events only).
function nextTimelineEvent(client, roomId, match, what) {
    const got = new Promise((resolve) => {
        const onTimeline = (event, room, toStartOfTimeline) => {
            if (toStartOfTimeline || !room || room.roomId !== roomId) return;
            if (match(event)) {
                client.off(RoomEvent.Timeline, onTimeline);
                resolve({ event, at: performance.now() });
            }
        };
        client.on(RoomEvent.Timeline, onTimeline);
    });
    return withTimeout(got, what);
}

function roomJoined(client, roomId) {
    const joined = new Promise((resolve) => {
        const check = () => {
            const room = client.getRoom(roomId);
            if (room && room.getMyMembership() === "join") {
                client.off(ClientEvent.Room, check);
                client.off(RoomEvent.MyMembership, check);
                resolve(room);
                return true;
            }
            return false;
        };
        if (!check()) {
            client.on(ClientEvent.Room, check);
            client.on(RoomEvent.MyMembership, check);
        }
    });
    return withTimeout(joined, `${client.getUserId()} joined ${roomId}`);
}

const scenarios = {
    // Register (interactive auth), log in with a password, ask who we are.
    async login(baseUrl) {
        const username = `alice-${unique()}`;
        const registered = await register(baseUrl, username);
        const { client, login: resp, flows } = await login(baseUrl, username);
        const whoami = await client.whoami();
        const versions = await client.getVersions();
        return {
            registered_user_id: registered.userId,
            register_flows: registered.flows,
            login_flows: flows,
            login: { user_id: resp.user_id, device_id: resp.device_id, has_token: Boolean(resp.access_token) },
            whoami,
            versions: versions.versions,
        };
    },

    // alice creates a room, bob joins; both sync; alice sends; bob receives it through /sync; then
    // bob pages back through /messages.
    async chat(baseUrl) {
        const alice = await newUser(baseUrl, "alice");
        const bob = await newUser(baseUrl, "bob");
        try {
            const { room_id: roomId } = await alice.createRoom({ name: "js interop", preset: "public_chat" });
            await started(alice);
            await started(bob);
            await bob.joinRoom(roomId);
            await roomJoined(bob, roomId);
            const body = `hello from js-sdk ${unique()}`;
            const received = nextTimelineEvent(bob, roomId, (e) => e.getContent().body === body, "alice's message");
            const sent = await alice.sendMessage(roomId, { msgtype: "m.text", body });
            const { event } = await received;
            const history = [];
            for (let i = 0; i < 24; i++) {
                await alice.sendMessage(roomId, { msgtype: "m.text", body: `history ${i}` });
            }
            // Page backwards from the end with the SDK's /messages call, 10 events a page.
            const pages = [];
            let from = null;
            for (let page = 0; page < 10; page++) {
                const resp = await bob.createMessagesRequest(roomId, from, 10, Direction.Backward);
                pages.push(resp.chunk.length);
                for (const e of resp.chunk) {
                    if (e.type === "m.room.message") history.push(e.content.body);
                }
                if (!resp.end || resp.chunk.length === 0) break;
                from = resp.end;
            }
            return {
                room_id: roomId,
                sent_event_id: sent.event_id,
                received: {
                    event_id: event.getId(),
                    sender: event.getSender(),
                    type: event.getType(),
                    body: event.getContent().body,
                },
                room_name: bob.getRoom(roomId).name,
                members: bob.getRoom(roomId).getJoinedMembers().map((m) => m.userId).sort(),
                history,
                pages,
            };
        } finally {
            alice.stopClient();
            bob.stopClient();
        }
    },

    // Account data: set through the API, seen by the syncing client, read back from the server.
    async account_data(baseUrl) {
        const alice = await newUser(baseUrl, "alice");
        try {
            await started(alice);
            const content = { theme: "dark", n: 3, nested: { ok: true } };
            const seen = withTimeout(
                new Promise((resolve) => {
                    alice.on(ClientEvent.AccountData, (event) => {
                        if (event.getType() === "org.example.interop") resolve(event.getContent());
                    });
                }),
                "the account data in /sync",
            );
            await alice.setAccountData("org.example.interop", content);
            const fromSync = await seen;
            const fromServer = await alice.getAccountDataFromServer("org.example.interop");
            const { room_id: roomId } = await alice.createRoom({ name: "tagged" });
            await alice.setRoomAccountData(roomId, "org.example.room", { pinned: true });
            const roomData = await alice.http.authedRequest(
                "GET",
                `/user/${encodeURIComponent(alice.getUserId())}/rooms/${encodeURIComponent(roomId)}/account_data/org.example.room`,
            );
            return { sent: content, from_sync: fromSync, from_server: fromServer, room_account_data: roomData };
        } finally {
            alice.stopClient();
        }
    },

    // Profile and room state: js-sdk writes state with an empty key as `state/m.room.topic/`.
    async profile_state(baseUrl) {
        const alice = await newUser(baseUrl, "alice");
        const bob = await newUser(baseUrl, "bob");
        try {
            await alice.setDisplayName("Alice Interop");
            const profile = await bob.getProfileInfo(alice.getUserId());
            const { room_id: roomId } = await alice.createRoom({ name: "stateful", preset: "public_chat" });
            await bob.joinRoom(roomId);
            await started(bob);
            const room = await roomJoined(bob, roomId);
            const topicSeen = nextTimelineEvent(bob, roomId, (e) => e.getType() === "m.room.topic", "the topic");
            await alice.sendStateEvent(roomId, "m.room.topic", { topic: "set by js-sdk" }, "");
            await topicSeen;
            const fromServer = await bob.getStateEvent(roomId, "m.room.topic", "");
            const members = await bob.getJoinedRoomMembers(roomId);
            return {
                profile,
                topic_in_room_state: room.currentState.getStateEvents("m.room.topic", "").getContent().topic,
                topic_from_server: fromServer.topic,
                alice_name_in_room: room.getMember(alice.getUserId()).name,
                joined_members: Object.keys(members.joined).sort(),
            };
        } finally {
            bob.stopClient();
        }
    },

    // Room directory and user directory, as Element's room and people search use them.
    async directory(baseUrl) {
        const alice = await newUser(baseUrl, "alice");
        const bob = await newUser(baseUrl, "bob");
        await alice.setDisplayName("Directory Alice");
        const aliasName = `lobby-${unique()}`;
        const { room_id: roomId } = await alice.createRoom({
            name: "Public lobby",
            topic: "all welcome",
            visibility: "public",
            preset: "public_chat",
            room_alias_name: aliasName,
        });
        const alias = `#${aliasName}:${alice.getDomain()}`;
        const resolved = await bob.getRoomIdForAlias(alias);
        const listed = await bob.publicRooms({ limit: 20 });
        const joined = await bob.joinRoom(alias);
        const people = await bob.searchUserDirectory({ term: "Directory", limit: 10 });
        const visibility = await alice.getRoomDirectoryVisibility(roomId);
        return {
            room_id: roomId,
            alias,
            resolved,
            public_rooms: listed.chunk.map((r) => ({
                room_id: r.room_id,
                name: r.name,
                topic: r.topic,
                canonical_alias: r.canonical_alias,
                num_joined_members: r.num_joined_members,
            })),
            joined_room_id: joined.roomId,
            people: people.results.map((u) => ({ user_id: u.user_id, display_name: u.display_name })),
            alice: alice.getUserId(),
            visibility: visibility.visibility,
        };
    },

    // Media through the authenticated endpoints, and relations (reactions) through /v1/relations.
    async media_relations(baseUrl) {
        const alice = await newUser(baseUrl, "alice");
        const bob = await newUser(baseUrl, "bob");
        const data = Buffer.from("bytes from js-sdk \u00e9\n".repeat(50), "utf8");
        const uploaded = await alice.uploadContent(data, { type: "text/plain", name: "notes.txt" });
        const url = bob.mxcUrlToHttp(uploaded.content_uri, undefined, undefined, undefined, false, true, true);
        const resp = await fetch(url, { headers: { Authorization: `Bearer ${bob.getAccessToken()}` } });
        const body = Buffer.from(await resp.arrayBuffer());
        const { room_id: roomId } = await alice.createRoom({ name: "reactions", preset: "public_chat" });
        await bob.joinRoom(roomId);
        const parent = await alice.sendMessage(roomId, { msgtype: "m.text", body: "react to me" });
        const reaction = await bob.sendEvent(roomId, "m.reaction", {
            "m.relates_to": { rel_type: "m.annotation", event_id: parent.event_id, key: "🎉" },
        });
        // Both forms of the endpoint: by relation type, and by relation and event type.
        const byRelType = await alice.fetchRelations(roomId, parent.event_id, "m.annotation", null);
        const relations = await alice.fetchRelations(roomId, parent.event_id, "m.annotation", "m.reaction");
        return {
            content_uri: uploaded.content_uri,
            download_url: url,
            download_status: resp.status,
            download_type: resp.headers.get("content-type"),
            same_bytes: Buffer.compare(body, data) === 0,
            reaction_event_id: reaction.event_id,
            by_rel_type: byRelType.chunk.map((e) => e.event_id),
            relations: relations.chunk.map((e) => ({
                event_id: e.event_id,
                sender: e.sender,
                key: e.content["m.relates_to"].key,
            })),
        };
    },

    // A long-polling /sync returns as soon as an event arrives (not at its 30 s timeout).
    async longpoll(baseUrl) {
        const alice = await newUser(baseUrl, "alice");
        const bob = await newUser(baseUrl, "bob");
        try {
            const { room_id: roomId } = await alice.createRoom({ name: "long poll", preset: "public_chat" });
            await bob.joinRoom(roomId);
            await started(bob);
            await roomJoined(bob, roomId);
            const latencies = [];
            for (let i = 0; i < 3; i++) {
                // Let bob's next /sync (timeout 30 s) reach the server and park.
                await new Promise((r) => setTimeout(r, 300));
                const body = `wake up ${i}`;
                const received = nextTimelineEvent(bob, roomId, (e) => e.getContent().body === body, body);
                const t0 = performance.now();
                await alice.sendMessage(roomId, { msgtype: "m.text", body });
                const { at } = await received;
                latencies.push(Math.round(at - t0));
            }
            return { latencies_ms: latencies, sync_timeout_ms: 30000 };
        } finally {
            bob.stopClient();
        }
    },
};

const [baseUrl, name] = process.argv.slice(2);
if (!baseUrl || !scenarios[name]) {
    process.stderr.write(`usage: node scenario.mjs <baseUrl> <${Object.keys(scenarios).join("|")}>\n`);
    process.exit(2);
}
let status = 0;
let result;
try {
    result = await withTimeout(scenarios[name](baseUrl), `scenario ${name}`, 90000);
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
