//! The credits ledger: purchases credited once, transfers between accounts, and the transaction
//! history. Every balance change is one transaction whose first statement is a conditional
//! `UPDATE` (no negative balance, no double spend) followed by its ledger row with the balance
//! after it.

use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{Repo, record_ledger, ts, uuid_col};
use crate::auth::now_ms;
use crate::error::{ApiError, ApiResult};

/// One ledger entry.
#[derive(Debug, Clone, Serialize)]
pub struct TransactionRow {
    /// Id (UUIDv7: ordered by time).
    pub id: Uuid,
    /// `grant | purchase | generation | refund | transfer_in | transfer_out | adjustment`.
    pub kind: String,
    /// Signed amount.
    pub amount: i64,
    /// Balance after this entry.
    pub balance_after: i64,
    /// What it was for (`generation:<id>`, `purchase:<id>`, `transfer:<id>`, …).
    pub reference: String,
    /// When, RFC 3339.
    pub created_at: String,
}

/// A purchase.
#[derive(Debug, Clone, Serialize)]
pub struct PurchaseRow {
    /// Id; the payment provider's `client_reference_id`.
    pub id: Uuid,
    /// Buyer.
    pub user_id: Uuid,
    /// Credits bought.
    pub credits: i64,
    /// Price in cents.
    pub amount_cents: i64,
    /// Currency.
    pub currency: String,
    /// `pending | completed | failed`.
    pub status: String,
    /// Created, RFC 3339.
    pub created_at: String,
}

/// What a payment confirmation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credited {
    /// The purchase was credited now.
    Now,
    /// It had been credited before (a redelivered event): nothing changed.
    Already,
}

impl Repo {
    /// A page of a user's ledger, newest first, before `cursor`.
    pub async fn transactions(
        &self,
        user: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> ApiResult<Vec<TransactionRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, amount, balance_after, reference, created_at FROM credit_transactions \
             WHERE user_id = $1 AND ($2 = '' OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(user.to_string())
        .bind(cursor.map_or_else(String::new, |c| c.to_string()))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TransactionRow {
                    id: uuid_col(r, "id")?,
                    kind: r.try_get("kind")?,
                    amount: r.try_get("amount")?,
                    balance_after: r.try_get("balance_after")?,
                    reference: r.try_get("reference")?,
                    created_at: ts(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// Record a pending purchase.
    pub async fn create_purchase(
        &self,
        user: Uuid,
        credits: i64,
        amount_cents: i64,
    ) -> ApiResult<PurchaseRow> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO purchases (id, user_id, credits, amount_cents, currency, status, created_at) \
             VALUES ($1, $2, $3, $4, 'usd', 'pending', $5)",
        )
        .bind(id.to_string())
        .bind(user.to_string())
        .bind(credits)
        .bind(amount_cents)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        self.purchase(id)
            .await?
            .ok_or_else(|| ApiError::Internal("purchase vanished after insert".into()))
    }

    /// A purchase.
    pub async fn purchase(&self, id: Uuid) -> ApiResult<Option<PurchaseRow>> {
        let row = sqlx::query(
            "SELECT id, user_id, credits, amount_cents, currency, status, created_at FROM purchases WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(PurchaseRow {
                id: uuid_col(&r, "id")?,
                user_id: uuid_col(&r, "user_id")?,
                credits: r.try_get("credits")?,
                amount_cents: r.try_get("amount_cents")?,
                currency: r.try_get("currency")?,
                status: r.try_get("status")?,
                created_at: ts(r.try_get("created_at")?),
            })
        })
        .transpose()
    }

    /// Credit a paid purchase exactly once: the status flip from `pending` and the credit commit
    /// together; a second delivery finds it completed and changes nothing.
    pub async fn complete_purchase(
        &self,
        purchase: &PurchaseRow,
        event: &str,
    ) -> ApiResult<Credited> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let flipped = sqlx::query(
            "UPDATE purchases SET status = 'completed', provider_ref = $1, completed_at = $2 \
             WHERE id = $3 AND status = 'pending'",
        )
        .bind(event)
        .bind(now)
        .bind(purchase.id.to_string())
        .execute(&mut *tx)
        .await;
        let flipped = match flipped {
            // The same event id already completed another purchase: a replay.
            Err(e) if super::unique_violation(&e) => return Ok(Credited::Already),
            other => other?,
        };
        if flipped.rows_affected() != 1 {
            return Ok(Credited::Already);
        }
        sqlx::query("UPDATE users SET credits = credits + $1, updated_at = $2 WHERE id = $3")
            .bind(purchase.credits)
            .bind(now)
            .bind(purchase.user_id.to_string())
            .execute(&mut *tx)
            .await?;
        let reference = format!("purchase:{}", purchase.id);
        record_ledger(
            &mut tx,
            purchase.user_id,
            "purchase",
            purchase.credits,
            &reference,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(Credited::Now)
    }

    /// Move `amount` credits from `from` to `to` in one transaction; the sender's balance never
    /// goes below zero. Returns the sender's balance after.
    pub async fn transfer(&self, from: Uuid, to: Uuid, amount: i64) -> ApiResult<i64> {
        let now = now_ms();
        let transfer = Uuid::now_v7();
        let mut tx = self.pool().begin().await?;
        let debited = sqlx::query(
            "UPDATE users SET credits = credits - $1, updated_at = $2 WHERE id = $3 AND credits >= $1",
        )
        .bind(amount)
        .bind(now)
        .bind(from.to_string())
        .execute(&mut *tx)
        .await?;
        if debited.rows_affected() != 1 {
            drop(tx);
            let balance = self.balance(from).await?;
            return Err(ApiError::InsufficientCredits {
                needed: amount,
                balance,
            });
        }
        let credited =
            sqlx::query("UPDATE users SET credits = credits + $1, updated_at = $2 WHERE id = $3")
                .bind(amount)
                .bind(now)
                .bind(to.to_string())
                .execute(&mut *tx)
                .await?;
        if credited.rows_affected() != 1 {
            return Err(ApiError::NotFound("recipient"));
        }
        let reference = format!("transfer:{transfer}");
        let sender_balance =
            record_ledger(&mut tx, from, "transfer_out", -amount, &reference, now).await?;
        record_ledger(&mut tx, to, "transfer_in", amount, &reference, now).await?;
        tx.commit().await?;
        Ok(sender_balance)
    }
}
