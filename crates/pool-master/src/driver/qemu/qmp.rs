//! The qemu driver's QMP side (the `qapi` crate): connecting to a guest's
//! socket, pressing a key, and the lab's halt switch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::driver::DriverError;

pub(super) type Qmp = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

/// Why a guest's QMP socket could not be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum QmpError {
    #[error("QEMU exited before its QMP socket opened (see the console file)")]
    Exited,
    #[error("cannot connect to {}: {source}", socket.display())]
    Connect {
        socket: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("QMP negotiation on {} failed: {source}", socket.display())]
    Negotiate {
        socket: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// How long a new QEMU process may take to open its QMP socket.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// Connect to a new guest's QMP socket (it appears once QEMU has set up),
/// and keep reading its events (the stream must be polled for commands to
/// complete). Fails if the process ends first or the socket does not come.
pub(super) async fn connect(socket: &Path, mut ended: watch::Receiver<bool>) -> Result<Qmp, QmpError> {
    let deadline = Instant::now() + QMP_TIMEOUT;
    let stream = loop {
        if *ended.borrow() {
            return Err(QmpError::Exited);
        }
        match QmpStreamTokio::open_uds(socket).await {
            Ok(s) => break s,
            Err(source) if Instant::now() >= deadline => {
                return Err(QmpError::Connect {
                    socket: socket.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_millis(20), ended.changed()).await;
            }
        }
    };
    let stream = stream.negotiate().await.map_err(|source| QmpError::Negotiate {
        socket: socket.to_path_buf(),
        source,
    })?;
    let (qmp, mut events) = stream.into_parts();
    tokio::spawn(async move {
        // The process-end task reports halts; events only need draining.
        while let Some(event) = events.next().await {
            match event {
                Ok(qapi::qmp::Event::SHUTDOWN { data, .. }) => {
                    tracing::debug!(guest = data.guest, reason = ?data.reason, "QMP SHUTDOWN");
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok(qmp)
}

/// Press the `h` key on the guest's keyboard (QMP `send-key`).
pub(super) async fn press_key(qmp: &Qmp) -> Result<(), qapi::ExecuteError> {
    let key = qapi::qmp::KeyValue::qcode(qapi::qmp::QKeyCodeWrapper {
        data: qapi::qmp::QKeyCode::h,
    });
    qmp.execute(qapi::qmp::send_key {
        keys: vec![key],
        hold_time: None,
    })
    .await
    .map(|_| ())
}

/// The lab's hand inside a guest (`xapid lab guest-halt`, as for sim
/// guests): when `<vm-uuid>.halt` appears beside the first disk, press a key
/// in the guest, which the test guest takes as an order to power off.
pub(super) async fn watch_halt_marker(marker: PathBuf, qmp: Arc<Qmp>, mut ended: watch::Receiver<bool>) {
    loop {
        if tokio::time::timeout(Duration::from_millis(200), ended.wait_for(|e| *e))
            .await
            .is_ok()
        {
            return;
        }
        if tokio::fs::remove_file(&marker).await.is_ok() {
            if let Err(e) = press_key(&qmp).await {
                tracing::warn!(marker = %marker.display(), "cannot press a key in the guest: {e}");
            }
        }
    }
}

pub(super) fn qmp_error(vm: &str, e: qapi::ExecuteError) -> DriverError {
    DriverError::Control {
        vm: vm.to_string(),
        why: e.to_string(),
    }
}
