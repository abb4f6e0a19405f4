//! Simulated failover latency: from a fault to the survivors' liveset
//! shrink, for the seeds' three failures, at T = 10 s and T = 60 s.
//! `cargo run -p ha-sim --release --example failover`.

use ha_liveness::HostSet;
use ha_sim::World;

fn main() -> Result<(), ha_liveness::timeouts::TimeoutError> {
    println!("| T | fault | fault -> liveset shrink (simulated) |");
    println!("|---|---|---|");
    for t in [10u64, 60] {
        for fault in ["power-off", "network cut", "network + storage cut"] {
            let mut w = World::new(3, t, 1)?;
            let settle = (t + 30) * 1000;
            if w.run_until(settle).is_err() {
                println!("| {t} s | {fault} | violation |");
                continue;
            }
            let start = w.now;
            match fault {
                "power-off" => w.power_off(2),
                "network cut" => w.set_network(2, false),
                _ => {
                    w.set_network(2, false);
                    w.set_storage(2, false);
                }
            }
            let pair: HostSet = [0, 1].into_iter().collect();
            let mut took = None;
            while w.now < start + 10 * t * 1000 {
                if w.run_until(w.now + 50).is_err() {
                    break;
                }
                if w.hosts[0].engine.liveset() == pair && w.hosts[1].engine.liveset() == pair {
                    took = Some(w.now - start);
                    break;
                }
            }
            match took {
                Some(ms) => println!("| {t} s | {fault} | {:.1} s |", ms as f64 / 1000.0),
                None => println!("| {t} s | {fault} | not within 10 T |"),
            }
        }
    }
    Ok(())
}
