//! Images: `io.containerd.service.v1.images-service` (the store over the metadata database,
//! with events and synchronous collection) and `io.containerd.grpc.v1.images`
//! (`containerd.services.images.v1.Images`). Handlers run on the completion-queue thread;
//! a Delete with `sync` waits there for the collection. Records: `crate::metadata::images`.

use std::sync::Arc;

use crate::api::event_types::{ImageCreate, ImageDelete, ImageUpdate};
use crate::api::images::{
    create_images, CreateImageRequest, CreateImageResponse, DeleteImageRequest, GetImageRequest,
    GetImageResponse, Image, Images, ListImagesRequest, ListImagesResponse, UpdateImageRequest,
    UpdateImageResponse,
};
use crate::api::types::Descriptor;
use crate::api::{timestamp, Empty};
use crate::errdefs::Error;
use crate::events::Exchange;
use crate::gc::Scheduler;
use crate::metadata::{Db, ImageRecord, Metadata, Target};
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, RpcResult};

/// The images service: the store, the collector for `sync` deletes, and the event exchange.
pub struct ImagesService {
    db: Arc<Db>,
    gc: Arc<Scheduler>,
    exchange: Arc<Exchange>,
}

fn record_of(image: Image) -> ImageRecord {
    let target = image.target.into_option().unwrap_or_default();
    ImageRecord {
        name: image.name,
        labels: image.labels.into_iter().collect(),
        target: Target {
            media_type: target.media_type,
            digest: target.digest,
            size: target.size,
            annotations: target.annotations.into_iter().collect(),
        },
        ..Default::default()
    }
}

fn image_of(rec: &ImageRecord) -> Image {
    Image {
        name: rec.name.clone(),
        labels: rec.labels.clone().into_iter().collect(),
        target: Some(Descriptor {
            media_type: rec.target.media_type.clone(),
            digest: rec.target.digest.clone(),
            size: rec.target.size,
            annotations: rec.target.annotations.clone().into_iter().collect(),
            ..Default::default()
        })
        .into(),
        created_at: Some(timestamp(rec.created_at)).into(),
        updated_at: Some(timestamp(rec.updated_at)).into(),
        ..Default::default()
    }
}

fn name_required(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::invalid_argument("Image.Name required"));
    }
    Ok(())
}

impl ImagesService {
    pub fn new(db: Arc<Db>, gc: Arc<Scheduler>, exchange: Arc<Exchange>) -> Self {
        ImagesService { db, gc, exchange }
    }

    fn publish(&self, ns: &str, topic: &str, rec: &ImageRecord) {
        let labels = rec.labels.clone().into_iter().collect();
        if topic == "/images/create" {
            let event = ImageCreate {
                name: rec.name.clone(),
                labels,
                ..Default::default()
            };
            self.exchange.publish_event(ns, topic, &event);
        } else {
            let event = ImageUpdate {
                name: rec.name.clone(),
                labels,
                ..Default::default()
            };
            self.exchange.publish_event(ns, topic, &event);
        }
    }
}

impl Images for ImagesService {
    fn get(&self, call: &Call, req: GetImageRequest) -> RpcResult<GetImageResponse> {
        let ns = call.namespace_required()?;
        let rec = self.db.image(ns, &req.name)?;
        Ok(GetImageResponse {
            image: Some(image_of(&rec)).into(),
            ..Default::default()
        })
    }

    fn list(&self, call: &Call, req: ListImagesRequest) -> RpcResult<ListImagesResponse> {
        let ns = call.namespace_required()?;
        let records = self.db.list_images(ns, &req.filters)?;
        Ok(ListImagesResponse {
            images: records.iter().map(image_of).collect(),
            ..Default::default()
        })
    }

    fn create(&self, call: &Call, req: CreateImageRequest) -> RpcResult<CreateImageResponse> {
        let image = req.image.into_option().unwrap_or_default();
        name_required(&image.name)?;
        let ns = call.namespace_required()?;
        let created = self.db.create_image(ns, record_of(image))?;
        self.publish(ns, "/images/create", &created);
        Ok(CreateImageResponse {
            image: Some(image_of(&created)).into(),
            ..Default::default()
        })
    }

    fn update(&self, call: &Call, req: UpdateImageRequest) -> RpcResult<UpdateImageResponse> {
        let image = req.image.into_option().unwrap_or_default();
        name_required(&image.name)?;
        let ns = call.namespace_required()?;
        let paths = req
            .update_mask
            .as_ref()
            .map(|mask| mask.paths.clone())
            .unwrap_or_default();
        let updated = self.db.update_image(ns, &record_of(image), &paths)?;
        self.publish(ns, "/images/update", &updated);
        Ok(UpdateImageResponse {
            image: Some(image_of(&updated)).into(),
            ..Default::default()
        })
    }

    fn delete(&self, call: &Call, req: DeleteImageRequest) -> RpcResult<Empty> {
        let ns = call.namespace_required()?;
        if let Some(target) = req.target.as_ref() {
            // Newer clients: only while the image still points at this target.
            let current = self.db.image(ns, &req.name)?;
            if current.target.digest != target.digest {
                return Err(Error::wrapped(
                    crate::errdefs::Class::FailedPrecondition,
                    format!(
                        "image {} has target {}, not {}",
                        crate::identifiers::go_quote(&req.name),
                        current.target.digest,
                        target.digest
                    ),
                ));
            }
        }
        self.db.delete_image(ns, &req.name)?;
        self.exchange.publish_event(
            ns,
            "/images/delete",
            &ImageDelete {
                name: req.name.clone(),
                ..Default::default()
            },
        );
        if req.sync {
            self.gc.schedule_and_wait()?;
        }
        Ok(Empty::default())
    }
}

impl GrpcServices for ImagesService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![create_images(Arc::new(ImagesService {
            db: self.db.clone(),
            gc: self.gc.clone(),
            exchange: self.exchange.clone(),
        }))]
    }
}

/// `io.containerd.service.v1.images-service` and `io.containerd.grpc.v1.images`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "images-service", |ic| {
            let db = ic.single::<Metadata>(types::METADATA)?.db.clone();
            let gc = ic.single::<Scheduler>(types::GC)?;
            let exchange = ic.single::<Exchange>(types::EVENT)?;
            Ok(Instance::new(Arc::new(ImagesService::new(
                db, gc, exchange,
            ))))
        })
        .requires(&[types::EVENT, types::METADATA, types::GC]),
        Registration::new(types::GRPC, "images", |ic| {
            let service = ic
                .plugins()
                .value::<ImagesService>(types::SERVICE, "images-service")
                .ok_or_else(|| Error::not_found("images service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FieldMask;
    use crate::content::{self, Digest};
    use crate::errdefs::Class;
    use crate::gc::SchedulerConfig;
    use crate::metadata::SharingPolicy;
    use std::collections::BTreeMap;

    struct Fixture {
        _dir: tempfile::TempDir,
        meta: Arc<Metadata>,
        svc: ImagesService,
        events: crate::events::Subscription,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&dir.path().join("meta.redb")).unwrap());
        let store = Arc::new(content::Store::open(&dir.path().join("content")).unwrap());
        let meta = Arc::new(Metadata::new(db.clone(), store, SharingPolicy::Shared));
        // No start-up collection: it could sweep the content a test commits before the
        // image that roots it is created. Tests collect with schedule_and_wait.
        let config = SchedulerConfig {
            startup_delay: crate::config::GoDuration(std::time::Duration::ZERO),
            ..SchedulerConfig::default()
        };
        let gc = Arc::new(Scheduler::start(meta.clone(), config));
        let exchange = Arc::new(Exchange::new());
        let events = exchange.subscribe(&[]).unwrap();
        Fixture {
            _dir: dir,
            meta,
            svc: ImagesService::new(db, gc, exchange),
            events,
        }
    }

    fn call() -> Call {
        Call::for_test(
            "containerd.services.images.v1.Images",
            "Create",
            &[("containerd-namespace", "default")],
        )
    }

    fn image(name: &str, digest: &Digest, size: i64) -> Image {
        Image {
            name: name.to_string(),
            target: Some(Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest: digest.to_string(),
                size,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn image_keeps_its_target_until_a_sync_delete() {
        let f = fixture();
        let call = call();
        let mut w = f
            .meta
            .writer(&crate::scope::Scope::new("default"), "m", 0, None)
            .unwrap();
        w.write(b"manifest").unwrap();
        let rec = w.commit(8, None, BTreeMap::new()).unwrap();
        let digest = Digest::parse(&rec.digest).unwrap();

        let created = Images::create(
            &f.svc,
            &call,
            CreateImageRequest {
                image: Some(image("img:1", &digest, 8)).into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(created.image.target.digest, rec.digest);
        f.svc.gc.schedule_and_wait().unwrap();
        assert!(
            f.meta
                .info(&crate::scope::Scope::new("default"), &digest)
                .is_ok(),
            "the image roots it"
        );

        let mut change = image("img:1", &digest, 8);
        change.labels.insert("k".into(), "v".into());
        let updated = Images::update(
            &f.svc,
            &call,
            UpdateImageRequest {
                image: Some(change.clone()).into(),
                update_mask: Some(FieldMask {
                    paths: vec!["labels.k".into()],
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(updated.image.labels["k"], "v");
        let err = Images::update(
            &f.svc,
            &call,
            UpdateImageRequest {
                image: Some(change).into(),
                update_mask: Some(FieldMask {
                    paths: vec!["bogus".into()],
                    ..Default::default()
                })
                .into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.message(),
            "cannot update \"bogus\" field on image \"img:1\": invalid argument"
        );

        Images::delete(
            &f.svc,
            &call,
            DeleteImageRequest {
                name: "img:1".into(),
                sync: true,
                ..Default::default()
            },
        )
        .unwrap();
        let err = f
            .meta
            .info(&crate::scope::Scope::new("default"), &digest)
            .unwrap_err();
        assert_eq!(err.class(), Class::NotFound, "collected before the answer");

        let topics: Vec<String> = (0..3)
            .map(|_| {
                f.events
                    .next_timeout(std::time::Duration::from_secs(10))
                    .unwrap()
                    .topic
            })
            .collect();
        assert_eq!(
            topics,
            ["/images/create", "/images/update", "/images/delete"]
        );
    }

    #[test]
    fn empty_name_and_missing_image_are_errors() {
        let f = fixture();
        let call = call();
        let err = Images::create(&f.svc, &call, CreateImageRequest::default()).unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        assert_eq!(err.message(), "Image.Name required");
        let mut empty_target = image("x", &Digest::of(b"x"), 1);
        empty_target.target = None.into();
        let err = Images::create(
            &f.svc,
            &call,
            CreateImageRequest {
                image: Some(empty_target).into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.class(), Class::InvalidArgument);
        let err = Images::get(
            &f.svc,
            &call,
            GetImageRequest {
                name: "nope".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.message(), "image \"nope\": not found");
    }
}
