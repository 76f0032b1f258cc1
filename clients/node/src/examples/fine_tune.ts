// Uploads a dataset, fine-tunes a model on it, watches the job to its end and
// shows what a refused job's error carries. Prints one JSON object per line.
//
//   TUNEWIRE_API_KEY=... node dist/examples/fine_tune.js localhost:50051 MODEL DATA.jsonl

import * as grpc from '@grpc/grpc-js';

import { call, connect, errorDetails, uploadDataset, watchJob } from '../index';

async function main(): Promise<void> {
  const [address = 'localhost:50051', model, data] = process.argv.slice(2);
  if (!model || !data) throw new Error('usage: fine_tune.js ADDRESS MODEL DATA');
  const tw = connect(address);
  const print = (what: object) => console.log(JSON.stringify(what));
  try {
    const info = await call(tw.training, tw.training.GetServerInfo, {});
    print({ info: { service: info.service, version: info.version } });

    const dataset = await uploadDataset(tw.datasets, data, 'node-upload');
    print({ dataset: { id: dataset.id, valid: dataset.report?.valid, format: dataset.format } });

    const { job } = await call(tw.training, tw.training.CreateTrainingJob, {
      spec: {
        model,
        dataset: { dataset_id: dataset.id },
        hyperparameters: { max_steps: 4, batch_size: 2, max_seq_length: 64, learning_rate: 0.002 },
        report_interval_steps: 1,
      },
    });
    print({ created: { id: job!.id, state: job!.state } });

    const last = await watchJob(tw.training, job!.id, (event) => {
      const summary: Record<string, unknown> = { sequence: Number(event.sequence), kind: event.payload };
      if (event.state_change) summary.state = event.state_change.state;
      if (event.training_metrics) {
        summary.step = Number(event.training_metrics.step);
        summary.loss = event.training_metrics.loss;
      }
      print({ event: summary });
    });
    print({ finished: last?.state_change?.state });

    try {
      await call(tw.training, tw.training.CreateTrainingJob, {
        spec: {
          model,
          dataset: { dataset_id: dataset.id },
          lora: { rank: 0 },
          hyperparameters: { batch_size: 100000 },
        },
      });
      print({ refused: false });
    } catch (error) {
      const failure = error as grpc.ServiceError;
      print({ refused: { code: grpc.status[failure.code], details: errorDetails(failure) } });
    }
  } finally {
    tw.close();
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
