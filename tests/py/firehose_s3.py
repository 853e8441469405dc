#!/usr/bin/env python3
"""Firehose + S3 fixture for the edge's Firehose uplink test (moto server).

  firehose_s3.py create ENDPOINT STREAM BUCKET   creates the bucket and an
      ExtendedS3 delivery stream (CompressionFormat and EncryptionConfiguration
      set: the Rust SDK needs them to parse DescribeDeliveryStream)
  firehose_s3.py dump ENDPOINT BUCKET            prints {"objects": [{"key", "b64"}]}

Independent of fleetpulse: plain boto3.
"""
import base64
import json
import sys

import boto3


def client(kind, endpoint):
    return boto3.client(kind, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def main():
    cmd, endpoint = sys.argv[1], sys.argv[2]
    if cmd == "create":
        stream, bucket = sys.argv[3], sys.argv[4]
        client("s3", endpoint).create_bucket(Bucket=bucket)
        client("firehose", endpoint).create_delivery_stream(
            DeliveryStreamName=stream,
            DeliveryStreamType="DirectPut",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                "BucketARN": f"arn:aws:s3:::{bucket}",
                "Prefix": "edge/",
                "CompressionFormat": "UNCOMPRESSED",
                "EncryptionConfiguration": {"NoEncryptionConfig": "NoEncryption"},
            },
        )
        print(json.dumps({"created": stream}))
    elif cmd == "dump":
        bucket = sys.argv[3]
        s3 = client("s3", endpoint)
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for o in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                out.append({"key": o["Key"], "b64": base64.b64encode(body).decode()})
        print(json.dumps({"objects": out}))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
