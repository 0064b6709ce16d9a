//! Headless Chromium driven over the Chrome DevTools Protocol, for pages
//! that stay live (the dashboard keeps its event stream open, so
//! `--dump-dom` would never see the page settle): navigate to a URL,
//! evaluate JavaScript in the page, wait until an expression holds, and
//! take full-page screenshots. The browser is killed by its own pid when
//! dropped.

use super::chromium::headless;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio_websockets::{MaybeTlsStream, Message, WebSocketStream};

/// How long the browser may take to start listening.
const START_WITHIN: Duration = Duration::from_secs(60);
/// How long one protocol call may take.
const CALL_WITHIN: Duration = Duration::from_secs(60);
/// The window, px: a laptop's width.
const WINDOW: (u32, u32) = (1280, 1000);

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// A running headless Chromium and the DevTools connection to its page.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    socket: Socket,
    next_id: u64,
}

impl Browser {
    /// Starts Chromium on `about:blank` and connects to its page.
    pub fn launch() -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = headless(profile.path(), WINDOW)
            .args(["--remote-debugging-port=0", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let port = devtools_port(&mut child);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let socket = runtime.block_on(connect_to_page(port));
        Browser {
            child,
            _profile: profile,
            runtime,
            socket,
            next_id: 0,
        }
    }

    /// Calls the protocol method `method`; its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({"id": id, "method": method, "params": params}).to_string();
        let socket = &mut self.socket;
        let answer = self.runtime.block_on(async {
            tokio::time::timeout(CALL_WITHIN, async {
                socket.send(Message::text(request)).await.expect("send");
                loop {
                    let message = socket.next().await.expect("open").expect("a message");
                    let Some(text) = message.as_text() else {
                        continue;
                    };
                    let value: Value = serde_json::from_str(text).expect("JSON");
                    // Events (no id) and other answers are not ours.
                    if value["id"] == id {
                        return value;
                    }
                }
            })
            .await
        });
        let answer = answer.unwrap_or_else(|_| panic!("{method}: no answer in {CALL_WITHIN:?}"));
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Loads `url` and waits until its document has loaded.
    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(
            &format!("navigate to {url}"),
            "document.readyState === 'complete' && location.href",
            Duration::from_secs(30),
        );
    }

    /// The value of the JavaScript `expression` in the page (awaited if a
    /// promise); panics on an exception.
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy and returns its value; panics
    /// naming `what`, with the page's text, after `within`.
    pub fn wait_for(&mut self, what: &str, expression: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let value = self.eval(expression);
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            if Instant::now() > deadline {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!(
                    "{what}: not within {within:?}; the page says:\n{}",
                    text.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the whole page (beyond the window) written to `png`.
    pub fn screenshot(&mut self, png: &Path) {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let clip =
            json!({"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1});
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "clip": clip, "captureBeyondViewport": true}),
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("data"))
            .expect("base64");
        std::fs::write(png, bytes).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port Chromium says it listens on (`DevTools listening on
/// ws://127.0.0.1:<port>/...` on stderr); the rest of stderr is drained.
fn devtools_port(child: &mut Child) -> u16 {
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("ws://127.0.0.1:").nth(1) {
                let port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(START_WITHIN) {
        Ok(Some(port)) => port,
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not say where DevTools listen: {other:?}")
        }
    }
}

/// Connects to the page target of the browser listening on `port`.
async fn connect_to_page(port: u16) -> Socket {
    let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .expect("/json/list")
        .json()
        .await
        .expect("targets");
    let url = targets
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .unwrap_or_else(|| panic!("no page target: {targets}"))
        .to_string();
    let (socket, _) = tokio_websockets::ClientBuilder::new()
        .uri(&url)
        .expect("a ws URL")
        .connect()
        .await
        .expect("connect to the page");
    socket
}
