"""The thin gRPC servicer of `WebhookService`: proto in, WebhookManager call, proto out."""

from __future__ import annotations

from tunewire.errors import handles_errors
from tunewire.trainer.config import TrainerConfig
from tunewire.trainer.identity import identify
from tunewire.trainer.webhooks.manager import WebhookManager
from tunewire.v1 import webhook_service_pb2 as webhook_service_pb
from tunewire.v1 import webhook_service_pb2_grpc as webhook_service_grpc


class WebhookService(webhook_service_grpc.WebhookServiceServicer):
    def __init__(self, config: TrainerConfig, webhooks: WebhookManager):
        self._config = config
        self._webhooks = webhooks

    def _who(self, context):
        return identify(context, self._config.internal_token)

    @handles_errors
    async def CreateWebhook(self, request, context):
        webhook = await self._webhooks.create(self._who(context), request.webhook)
        return webhook_service_pb.CreateWebhookResponse(webhook=webhook)

    @handles_errors
    async def ListWebhooks(self, request, context):
        return webhook_service_pb.ListWebhooksResponse(
            webhooks=self._webhooks.list(self._who(context))
        )

    @handles_errors
    async def DeleteWebhook(self, request, context):
        self._webhooks.delete(self._who(context), request.webhook_id)
        return webhook_service_pb.DeleteWebhookResponse()

    @handles_errors
    async def ListWebhookDeliveries(self, request, context):
        deliveries, token = self._webhooks.deliveries(
            self._who(context), request.webhook_id, request.page_size, request.page_token
        )
        return webhook_service_pb.ListWebhookDeliveriesResponse(
            deliveries=deliveries, next_page_token=token
        )
