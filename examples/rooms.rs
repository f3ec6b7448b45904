//! Rooms with logins: the README's "Using it" example. A client joins a room named in the path with a token in the
//! query; `accept` refuses an unknown token with 401 and keeps who the user is as the connection's data; every
//! later callback knows the user from it.
//!
//! ```text
//! cargo run --example rooms             # listens on 127.0.0.1:9003; or give an address: -- 127.0.0.1:9100
//! ```
//!
//! Then connect to `ws://127.0.0.1:9003/room/lobby?token=ada-secret` (or `grace-secret`) with any WebSocket client.

use std::collections::HashMap;

use wsloop::handshake::{HttpResponse, Request};
use wsloop::{Accept, Closed, Config, ConnId, Context, Handle, Handler, Message, Server};

/// Who a connection is, known from the token it came with: kept as the connection's data.
pub struct User {
    pub name: String,
    pub room: String,
}

/// The users, by token (a real application would ask its session store).
pub struct Rooms {
    pub tokens: HashMap<String, String>,
}

impl Handler for Rooms {
    /// `GET /room/NAME?token=TOKEN`: no room is 404, an unknown token 401; otherwise the user comes in.
    fn accept(&mut self, req: &Request<'_>) -> Result<Accept, HttpResponse> {
        let room = req.path().strip_prefix("/room/").filter(|r| !r.is_empty());
        let Some(room) = room else {
            return Err(HttpResponse::error(404));
        };
        let token = req.query_param("token").unwrap_or_default();
        let Some(name) = self.tokens.get(&token) else {
            let challenge = r#"Bearer realm="rooms""#;
            return Err(HttpResponse::error(401).header("WWW-Authenticate", challenge));
        };
        let user = User {
            name: name.clone(),
            room: room.to_string(),
        };
        Ok(Accept::new().data(user))
    }

    /// The PHP `add`: the user joins the room of its path; everyone there hears of it.
    fn add(&mut self, ws: &mut Handle<'_>, id: ConnId, conn: &Context<'_>) {
        let Some(user) = ws.data::<User>(id) else {
            return;
        };
        let room = user.room.clone();
        let hello = format!("{} joined {room} from {}", user.name, conn.peer().ip());
        ws.subscribe(id, &room);
        ws.publish(&room, hello);
    }

    /// The PHP `send`: a line to the user's room, signed with the user's name.
    fn send(&mut self, ws: &mut Handle<'_>, id: ConnId, msg: Message<'_>) {
        let (Message::Text(text), Some(user)) = (msg, ws.data::<User>(id)) else {
            return;
        };
        let (room, line) = (user.room.clone(), format!("{}: {text}", user.name));
        ws.publish(&room, line);
    }

    /// The PHP `close`: the user's data comes back; the room hears who left and how.
    fn close(&mut self, ws: &mut Handle<'_>, _id: ConnId, mut closed: Closed<'_>) {
        if let Some(user) = closed.take_data::<User>() {
            let bye = format!("{} left ({:?}, {})", user.name, closed.by, closed.status());
            ws.publish(&user.room, bye);
        }
    }
}

/// Two users, for trying it out.
pub fn demo_tokens() -> HashMap<String, String> {
    [("ada-secret", "Ada"), ("grace-secret", "Grace")]
        .into_iter()
        .map(|(token, name)| (token.to_string(), name.to_string()))
        .collect()
}

#[allow(dead_code)] // the tests include this file for `Rooms`, and start it themselves
fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9003".into());
    let rooms = Rooms {
        tokens: demo_tokens(),
    };
    if let Err(e) = Server::start_server(addr.as_str(), Config::default(), rooms) {
        eprintln!("rooms: {e}");
        std::process::exit(1);
    }
}
